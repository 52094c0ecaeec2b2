"""Functions templates may call: `events()`, `settled()`, `any_ok()`, `now()` (DESIGN.md §4)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from whenflow.domain.errors import WhenflowError
from whenflow.domain.events import Event
from whenflow.domain.states import NodeState
from whenflow.dsl.templates import Namespace

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState


class SecretsUnavailable(WhenflowError):
    """`secret()` needs a secrets backend, which this execution was not given."""


class SecretNotFound(WhenflowError):
    """`secret('NAME')` names a secret the backend lacks; the message says where to set it."""


def matching_events(events: Iterable[Event], pattern: str) -> list[dict[str, Any]]:
    """What `events(pattern)` returns: the matching events, in seq order, as plain dicts."""
    return [
        {
            "event_type": e.event_type,
            "source": e.source,
            "seq": e.seq,
            "timestamp": e.timestamp,
            "payload": dict(e.payload),
        }
        for e in events
        if fnmatchcase(e.event_type, pattern)
    ]


def install_helpers(state: ExecutionState) -> None:
    """Put the helper functions into the execution's template context."""

    def node_ids(args: tuple[Any, ...]) -> list[str]:
        ids = []
        for arg in args:
            name = arg._name if isinstance(arg, Namespace) else str(arg)
            if name not in state.nodes:
                raise ValueError(f"{name!r} is not a node of this pipeline")
            ids.append(name)
        return ids

    def events(pattern: str) -> list[dict[str, Any]]:
        return matching_events(state.events, pattern)

    def settled(*nodes: Any) -> bool:
        return all(state.nodes[n].state.is_terminal for n in node_ids(nodes))

    def any_ok(*nodes: Any) -> bool:
        return any(state.nodes[n].state is NodeState.COMPLETED for n in node_ids(nodes))

    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def secret(name: str) -> str:
        store = state.secrets
        if store is None:
            raise SecretsUnavailable(f"secret({name!r}): this execution has no secrets backend")
        value = store.get(str(name))
        if value is None:
            raise SecretNotFound(f"secret({name!r}) is not set: {store.describe(str(name))}")
        state.mask.reveal(value)
        return value

    state.pool.context.update(events=events, settled=settled, any_ok=any_ok, now=now, secret=secret)
