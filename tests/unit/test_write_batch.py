"""Planning one batch of records into `executemany` steps (whenflow.storage.write_batch).

Rows are tuples in the order of each step's `columns`; these tests read them
back by name through `Step.mappings()`, the form PostgreSQL's path binds.
"""

from __future__ import annotations

from typing import Any

import pytest

from whenflow.domain.events import Event
from whenflow.domain.records import (
    AttemptRecorded,
    EventAppended,
    ExecutionCreated,
    ExecutionUpdated,
    InboxApplied,
    LogAppended,
    NodeUpdated,
    Record,
    VariableWritten,
)
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.domain.variables import ArtifactRef, Variable
from whenflow.storage import tables
from whenflow.storage.write_batch import BatchStatements, Step, plan_batch

T0 = 1_700_000_000.25
EX = "0f0f0f0f-0000-4000-8000-000000000001"
STATEMENTS = BatchStatements("sqlite")
REF = ArtifactRef("file:///a/b", 3, "ab" * 32, "application/json", kind="value")


def plan(records: list[Record]) -> dict[str, list[dict[str, Any]]]:
    """The planned rows by table name (the update step as `executions_update`)."""
    steps = plan_batch(records, STATEMENTS)
    return {_name(step): step.mappings() for step in steps}


def _name(step: Step) -> str:
    if step.statement is STATEMENTS.update_execution:
        return "executions_update"
    table: Any = step.statement.table  # type: ignore[attr-defined]
    return str(table.name)


def test_every_record_kind_becomes_the_row_of_its_table() -> None:
    records: list[Record] = [
        ExecutionCreated(EX, "demo", "1.0.0", "text", "/p.yaml", {"n": 3}, T0, "parent", "old"),
        NodeUpdated(EX, "a", NodeState.FAILED, 2, T0 + 2, T0, T0 + 2, "boom", "why"),
        AttemptRecorded(
            EX, "a", 4, 2, NodeState.FAILED, f"{EX}/a/4", T0, T0 + 1, "KeyError", "missing"
        ),
        EventAppended(Event("e1", EX, 7, "a.failed", "a", T0 + 3, {"attempt": 2, "é": [1]})),
        VariableWritten(EX, Variable("a", "v", None, "object", T0, {"k": 1}, REF)),
        LogAppended(EX, "a", 2, 4, "stderr", "line", T0 + 4),
        ExecutionUpdated(EX, ExecutionStatus.FAILED, T0 + 5, T0 + 5, {"out": 1}, "failed"),
        InboxApplied(EX, 12, T0 + 6, "not waiting"),
    ]

    rows = plan(records)

    assert list(rows) == [
        "executions",
        "node_states",
        "node_attempts",
        "events",
        "variables",
        "task_logs",
        "executions_update",
        "inbox",
    ]
    assert rows["executions"] == [
        {
            "id": EX,
            "pipeline_name": "demo",
            "pipeline_version": "1.0.0",
            "definition_text": "text",
            "definition_path": "/p.yaml",
            "inputs": '{"n":3}',
            "status": "running",
            "created_at": T0,
            "updated_at": T0,
            "finished_at": None,
            "outputs": None,
            "error": None,
            "parent_execution_id": "parent",
            "retry_of": "old",
        }
    ]
    assert rows["node_states"] == [
        {
            "execution_id": EX,
            "node_id": "a",
            "state": "failed",
            "attempts": 2,
            "updated_at": T0 + 2,
            "started_at": T0,
            "finished_at": T0 + 2,
            "error": "boom",
            "reason": "why",
        }
    ]
    assert rows["node_attempts"] == [
        {
            "execution_id": EX,
            "node_id": "a",
            "item_index": 4,
            "attempt": 2,
            "status": "failed",
            "idempotency_key": f"{EX}/a/4",
            "started_at": T0,
            "finished_at": T0 + 1,
            "error_type": "KeyError",
            "error_message": "missing",
        }
    ]
    assert rows["events"] == [
        {
            "execution_id": EX,
            "seq": 7,
            "event_id": "e1",
            "event_type": "a.failed",
            "source": "a",
            "timestamp": T0 + 3,
            "payload": '{"attempt":2,"é":[1]}',
        }
    ]
    assert rows["variables"] == [
        {
            "execution_id": EX,
            "scope": "a",
            "name": "v",
            "value": "null",
            "type": "object",
            "metadata": '{"k":1}',
            "artifact": (
                '{"uri":"file:///a/b","size":3,"sha256":"' + "ab" * 32 + '",'
                '"content_type":"application/json","kind":"value","filename":"","schema":null}'
            ),
            "created_at": T0,
        }
    ]
    assert rows["task_logs"] == [
        {
            "execution_id": EX,
            "node_id": "a",
            "attempt": 2,
            "item_index": 4,
            "stream": "stderr",
            "message": "line",
            "at": T0 + 4,
        }
    ]
    assert rows["executions_update"] == [
        {
            "status": "failed",
            "updated_at": T0 + 5,
            "finished_at": T0 + 5,
            "outputs": '{"out":1}',
            "error": "failed",
            "target_id": EX,
        }
    ]
    assert rows["inbox"] == [{"applied_at": T0 + 6, "refusal": "not waiting", "message_id": 12}]


def test_the_columns_of_every_step_are_columns_of_its_table() -> None:
    records: list[Record] = [
        ExecutionCreated(EX, "demo", "1.0.0", "text", None, {}, T0),
        NodeUpdated(EX, "a", NodeState.RUNNING, 1, T0),
        AttemptRecorded(EX, "a", -1, 1, NodeState.RUNNING, f"{EX}/a", T0),
        EventAppended(Event("e1", EX, 1, "a.started", "a", T0)),
        VariableWritten(EX, Variable("a", "v", 1, "integer", T0)),
        LogAppended(EX, "a", 1, -1, "stdout", "line", T0),
        ExecutionUpdated(EX, ExecutionStatus.COMPLETED, T0),
    ]
    for step in plan_batch(records, STATEMENTS):
        table: Any = step.statement.table  # type: ignore[attr-defined]
        assert table.name in tables.metadata.tables
        assert set(step.columns) <= {*table.c.keys(), "target_id"}, _name(step)
        assert all(len(row) == len(step.columns) for row in step.rows)


def test_upserts_coalesce_per_key_last_wins_and_inserts_keep_every_record() -> None:
    records: list[Record] = [
        NodeUpdated(EX, "a", NodeState.RUNNING, 1, T0),
        NodeUpdated(EX, "b", NodeState.RUNNING, 1, T0),
        EventAppended(Event("e1", EX, 1, "a.started", "a", T0)),
        NodeUpdated(EX, "a", NodeState.COMPLETED, 1, T0 + 1, finished_at=T0 + 1),
        VariableWritten(EX, Variable("a", "v", 1, "integer", T0)),
        VariableWritten(EX, Variable("a", "v", 2, "integer", T0 + 1)),
        EventAppended(Event("e2", EX, 2, "a.completed", "a", T0 + 1)),
        ExecutionUpdated(EX, ExecutionStatus.WAITING, T0),
        ExecutionUpdated(EX, ExecutionStatus.COMPLETED, T0 + 2, T0 + 2),
    ]

    rows = plan(records)

    assert [(r["node_id"], r["state"]) for r in rows["node_states"]] == [
        ("a", "completed"),
        ("b", "running"),
    ]
    assert [r["value"] for r in rows["variables"]] == ["2"]
    assert [r["seq"] for r in rows["events"]] == [1, 2]
    assert [r["status"] for r in rows["executions_update"]] == ["completed"]


def test_a_value_json_cannot_encode_fails_the_plan() -> None:
    record = VariableWritten(EX, Variable("a", "v", object(), "object", T0))
    with pytest.raises(TypeError, match="not JSON serialisable"):
        plan_batch([record], STATEMENTS)


def test_something_that_is_not_a_record_fails_the_plan() -> None:
    with pytest.raises(TypeError, match="not a state-store record"):
        plan_batch(["a string"], STATEMENTS)  # type: ignore[list-item]
