"""`engine/retries.retry_of`: what a retried execution keeps from the one it retries."""

from __future__ import annotations

from whenflow.domain.events import Event
from whenflow.domain.records import (
    EventAppended,
    ExecutionCreated,
    ExecutionSnapshot,
    NodeUpdated,
    VariableWritten,
)
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.domain.variables import Variable
from whenflow.engine.retries import retry_of

OLD, NEW, T0 = "old-id", "new-id", 1_700_000_000.0


def _event(seq: int, event_type: str, source: str) -> Event:
    return Event(f"e{seq}", OLD, seq, event_type, source, T0 + seq, {"seq": seq})


def _old() -> ExecutionSnapshot:
    events = (
        _event(1, "pipeline.started", "pipeline"),
        _event(2, "a.started", "a"),
        _event(3, "a.completed", "a"),
        _event(4, "external.go", "external"),
        _event(5, "b.started", "b"),
        _event(6, "b.failed", "b"),
        _event(7, "c.skipped", "c"),
        _event(8, "pipeline.failed", "pipeline"),
    )
    variables = (
        Variable("pipeline.input", "n", 3, "integer", T0),
        Variable("a", "out", 1, "integer", T0),
        Variable("a#item", "0", {"x": 1}, "object", T0),
        Variable("b", "partial", 2, "integer", T0),
        Variable("system", "started_at", T0, "number", T0),
    )
    nodes = (
        NodeUpdated(OLD, "a", NodeState.COMPLETED, 1, T0, T0, T0),
        NodeUpdated(OLD, "b", NodeState.FAILED, 2, T0, T0, T0, "boom"),
        NodeUpdated(OLD, "c", NodeState.SKIPPED, 0, T0),
    )
    return ExecutionSnapshot(
        OLD, "demo", "1.0.0", "text", "/p.yaml", {"n": 3}, ExecutionStatus.FAILED, T0, T0 + 9,
        None, "boom", events, variables, nodes,
    )  # fmt: skip


def test_completed_nodes_keep_their_outputs_and_events_and_the_rest_is_pending() -> None:
    records, snapshot = retry_of(_old(), NEW, T0 + 100)

    created = records[0]
    assert isinstance(created, ExecutionCreated)
    assert (created.execution_id, created.retry_of, created.inputs) == (NEW, OLD, {"n": 3})
    assert snapshot.retry_of == OLD
    assert snapshot.status is ExecutionStatus.RUNNING
    assert [(n.execution_id, n.node_id, n.state) for n in snapshot.nodes] == [
        (NEW, "a", NodeState.COMPLETED)
    ]
    assert [(v.scope, v.name) for v in snapshot.variables] == [
        ("pipeline.input", "n"),
        ("a", "out"),
        ("a#item", "0"),
    ]
    kept = [(e.seq, e.event_type, e.execution_id) for e in snapshot.events]
    assert kept == [
        (1, "pipeline.started", NEW),
        (2, "a.started", NEW),
        (3, "a.completed", NEW),
        (4, "external.go", NEW),
    ]
    assert not {e.event_id for e in snapshot.events} & {f"e{i}" for i in range(1, 9)}
    written = [r for r in records if isinstance(r, VariableWritten)]
    assert [w.variable for w in written] == list(snapshot.variables)
    appended = [r.event for r in records if isinstance(r, EventAppended)]
    assert appended == list(snapshot.events)
    assert [r for r in records if isinstance(r, NodeUpdated)] == list(snapshot.nodes)
