"""Node and execution states (DESIGN.md §5)."""

from __future__ import annotations

from enum import StrEnum


class NodeState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    STOPPED = "stopped"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_NODE_STATES


TERMINAL_NODE_STATES = frozenset(
    {
        NodeState.COMPLETED,
        NodeState.FAILED,
        NodeState.SKIPPED,
        NodeState.STOPPED,
        NodeState.CANCELLED,
    }
)


class ExecutionStatus(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_EXECUTION_STATUSES


TERMINAL_EXECUTION_STATUSES = frozenset(
    {
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
        ExecutionStatus.STOPPED,
        ExecutionStatus.CANCELLED,
    }
)

# The event each terminal node state publishes (`<node>.<suffix>`).
TERMINAL_EVENT_SUFFIX: dict[NodeState, str] = {
    NodeState.COMPLETED: "completed",
    NodeState.FAILED: "failed",
    NodeState.SKIPPED: "skipped",
    NodeState.STOPPED: "stopped",
    NodeState.CANCELLED: "cancelled",
}
