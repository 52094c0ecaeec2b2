"""The event record and the names the engine reserves (DESIGN.md §3)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whenflow.domain.errors import WhenflowError

PIPELINE_SOURCE = "pipeline"
EXTERNAL_SOURCE = "external"

# The name part of a custom event (`<node>.<name>`) or an outside one (`external.<name>`).
EVENT_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

# Event names a node publishes itself; a task's custom events may not use them.
RESERVED_NODE_EVENTS = frozenset(
    {
        "started",
        "completed",
        "failed",
        "retrying",
        "skipped",
        "stopped",
        "cancelled",
        "waiting",
        "approved",
        "rejected",
        "item_completed",
        "item_failed",
    }
)

# Node events after which the node is terminal and its outputs (if any) are in the pool.
SETTLING_NODE_EVENTS = frozenset(
    {"completed", "failed", "skipped", "stopped", "cancelled", "approved", "rejected"}
)


class UndeclaredEvent(WhenflowError):
    """A task emitted a custom event its node and task do not declare (DESIGN.md §5)."""

    def __init__(self, node_id: str, name: str, declared: frozenset[str]) -> None:
        listed = ", ".join(sorted(declared)) or "none"
        super().__init__(
            f"node {node_id!r} emitted {name!r}, which it does not declare "
            f"(declared: {listed}); add it to the node's `emits:` or to "
            f"@whenflow.task(emits=[...])"
        )
        self.node_id = node_id
        self.name = name


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of an execution's append-only event log; `seq` orders them."""

    event_id: str
    execution_id: str
    seq: int
    event_type: str
    source: str
    timestamp: float
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The part after the source: `completed` in `extract.completed`."""
        return self.event_type.partition(".")[2]
