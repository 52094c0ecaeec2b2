"""Functions templates may call: `events()`, `settled()`, `any_ok()`, `now()` (DESIGN.md §4)."""

from __future__ import annotations

import datetime as dt
from collections import ChainMap
from collections.abc import Callable, Iterable, Sequence
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


class EventMatches:
    """`events(pattern)` without rescanning the log: each pattern's matches so far,
    extended by the events published since its last call, so counting a running
    node's events at each of them costs O(events), not O(events²)."""

    MAX_PATTERNS = 1024

    def __init__(self, log: Callable[[], Sequence[Event]]) -> None:
        self._log = log
        self._seen: Sequence[Event] | None = None
        self._found: dict[str, tuple[list[int], list[dict[str, Any]]]] = {}

    def shared(self, pattern: str) -> list[dict[str, Any]]:
        """The matches as one list kept between calls: only for reads that cannot
        change it or let it escape (a condition in the immutable sandbox)."""
        log = self._log()
        if log is not self._seen or len(self._found) >= self.MAX_PATTERNS:
            self._seen, self._found = log, {}  # a resume replaced the log
        entry = self._found.get(pattern)
        if entry is None:
            entry = self._found[pattern] = ([0], [])
        upto, found = entry
        if upto[0] < len(log):
            found.extend(matching_events(log[upto[0] :], pattern))
            upto[0] = len(log)
        return found

    def copied(self, pattern: str) -> list[dict[str, Any]]:
        """The matches as new dicts, for a value that may reach a task."""
        return [{**e, "payload": dict(e["payload"])} for e in self.shared(pattern)]


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

    matches = EventMatches(lambda: state.events)

    def events(pattern: str) -> list[dict[str, Any]]:
        return matches.copied(str(pattern))

    def counted_events(pattern: str) -> list[dict[str, Any]]:
        return matches.shared(str(pattern))

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
    state.condition_context = ChainMap({"events": counted_events}, state.pool.context)
