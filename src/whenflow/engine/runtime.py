"""Mutable per-execution state owned by the dispatcher, and the result it returns."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whenflow.domain.records import ExecutionSnapshot
from whenflow.domain.schedules import SCHEDULE_SYSTEM_NAMES
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.dsl.program import NodeProgram
from whenflow.engine.trigger_eval import TriggerTree

NO_ITEM = -1


@dataclass(slots=True)
class ForEachRun:
    """Progress of a forEach node over its items, or of an `each:` node over its events."""

    items: list[Any]
    scope: str = "item"
    """The name an item has in its templates: `item`, or `event` for an `each:` node."""
    open: bool = False
    """More items may come: an `each:` node whose source still runs."""
    next_index: int = 0
    running: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    results: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    retry_timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    queued: set[int] = field(default_factory=set)
    pending_retries: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return (
            not self.open
            and self.next_index >= len(self.items)
            and not self.running
            and not self.retry_timers
            and not self.queued
            and not self.pending_retries
        )


@dataclass(slots=True)
class NodeRuntime:
    program: NodeProgram
    start_tree: TriggerTree
    stop_tree: TriggerTree | None
    state: NodeState = NodeState.PENDING
    attempt: int = 0
    lost_attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    reason: str | None = None
    task: asyncio.Task[None] | None = None
    retry_timer: asyncio.TimerHandle | None = None
    deadline_timer: asyncio.TimerHandle | None = None
    deadline: float | None = None
    """A waiting approval's deadline (unix seconds); decisions stored later are refused."""
    adopt_child: str | None = None
    """After a resume: the child execution the lost attempt of a `pipeline` task started."""
    """A waiting approval's timeout; not counted in `timers` (it may wait for hours)."""
    queued: bool = False
    foreach: ForEachRun | None = None
    # The node id, copied once: the dispatcher reads it ~20 times per attempt,
    # and through two properties that was a few µs per node.
    id: str = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.program.id


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    status: NodeState
    attempts: int
    outputs: Mapping[str, Any]
    error: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "attempts": self.attempts,
            "outputs": dict(self.outputs),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What `whenflow run --json` prints and `whenflow.run()` returns."""

    execution_id: str
    pipeline: str
    version: str
    status: ExecutionStatus
    outputs: Mapping[str, Any]
    nodes: Mapping[str, NodeOutcome]
    events: tuple[str, ...]
    error: str | None = None
    retry_of: str | None = None
    cycle: Mapping[str, Any] | None = None
    """`{schedule, cycle, logicalDate}` when a schedule started the execution."""

    def to_json(self) -> dict[str, Any]:
        data = {
            "executionId": self.execution_id,
            "retryOf": self.retry_of,
            "pipeline": self.pipeline,
            "version": self.version,
            "status": str(self.status),
            "outputs": dict(self.outputs),
            "nodes": {k: v.to_json() for k, v in self.nodes.items()},
            "events": list(self.events),
            "error": self.error,
        }
        if self.cycle is not None:
            data["cycle"] = dict(self.cycle)
        return data

    @classmethod
    def from_snapshot(cls, snapshot: ExecutionSnapshot) -> ExecutionResult:
        """The result as stored: what `executions show` prints for any execution."""
        outputs: dict[str, dict[str, Any]] = {}
        system: dict[str, Any] = {}
        for var in snapshot.variables:
            if var.scope == "system":
                system[var.name] = var.value
            if "#" in var.scope or var.scope in ("pipeline.input", "system"):
                continue
            value = var.value if var.artifact is None else var.artifact.to_json()
            outputs.setdefault(var.scope, {})[var.name] = value
        nodes = {
            row.node_id: NodeOutcome(
                row.state, row.attempts, outputs.get(row.node_id, {}), row.error, row.reason
            )
            for row in snapshot.nodes
        }
        return cls(
            execution_id=snapshot.execution_id,
            pipeline=snapshot.pipeline_name,
            version=snapshot.pipeline_version,
            status=snapshot.status,
            outputs=dict(snapshot.outputs or {}),
            nodes=nodes,
            events=tuple(e.event_type for e in snapshot.events),
            error=snapshot.error,
            retry_of=snapshot.retry_of,
            cycle=cycle_of(system),
        )


def cycle_of(system: Mapping[str, Any]) -> dict[str, Any] | None:
    """The schedule values among an execution's `system.*` values, None without them."""
    if "cycle" not in system:
        return None
    return {name: system.get(name) for name in SCHEDULE_SYSTEM_NAMES}
