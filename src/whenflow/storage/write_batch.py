"""Turn one batch of records into a handful of `executemany` steps (DESIGN.md §7).

The state store commits everything that accumulated while its previous commit
ran; this module decides how. Records are grouped by statement, and the steps
run in an order that satisfies the foreign keys: new executions first, then
node and attempt upserts, events, variables, logs, execution updates, and
last the inbox messages the batch consumed.
The whole batch is one transaction, so the order inside it is invisible to
readers; what is durable is still a prefix of what was appended.

Upserts are coalesced per key, last one wins. That keeps the batch small (a
node goes pending → running → completed in one loop turn) and makes
`executemany` safe on PostgreSQL, where one multi-row `INSERT ... ON CONFLICT`
may not touch the same row twice.

`ExecutionUpdated` and `NodeUpdated` carry the full mutable state of their
row: every column they name is written, `None` included (a resumed execution
clears its `finished_at` and `error` that way).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from whenflow.domain.errors import StoreError
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
from whenflow.storage import tables

Row = dict[str, Any]


def _json_default(value: object) -> object:
    # Mappings other than dict (MappingProxyType, frozen views) are plain objects to json.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r:.200}")


# One encoder for the process: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode


def encode_json(value: object) -> str:
    """The JSON text stored for a value: compact, UTF-8, no lossy fallback."""
    if not value and isinstance(value, dict):
        return "{}"  # most payloads and metadata
    return _encode(value)


@dataclass(frozen=True, slots=True)
class Step:
    """One statement and the parameter rows it runs with (`executemany`)."""

    statement: sa.Executable
    rows: list[Row]


class BatchStatements:
    """The statements of a batch for one SQL dialect, built once per store."""

    def __init__(self, dialect_name: str) -> None:
        self.insert_execution = sa.insert(tables.executions)
        self.upsert_node = _upsert(dialect_name, tables.node_states, ("execution_id", "node_id"))
        self.upsert_attempt = _upsert(
            dialect_name,
            tables.node_attempts,
            ("execution_id", "node_id", "item_index", "attempt"),
        )
        self.insert_event = sa.insert(tables.events)
        self.upsert_variable = _upsert(
            dialect_name, tables.variables, ("execution_id", "scope", "name")
        )
        self.insert_log = sa.insert(tables.task_logs)
        # No .values(): the SET clause comes from the keys of the parameter rows.
        self.update_execution = sa.update(tables.executions).where(
            tables.executions.c.id == sa.bindparam("target_id")
        )
        self.mark_applied = sa.update(tables.inbox).where(
            tables.inbox.c.id == sa.bindparam("message_id")
        )


def _upsert(dialect_name: str, table: sa.Table, key: tuple[str, ...]) -> sa.Executable:
    """`INSERT ... ON CONFLICT (key) DO UPDATE SET every other column = excluded`."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg_stmt = pg_insert(table)
        return pg_stmt.on_conflict_do_update(
            index_elements=list(key),
            set_={c.name: pg_stmt.excluded[c.name] for c in table.c if c.name not in key},
        )
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite_stmt = sqlite_insert(table)
        return lite_stmt.on_conflict_do_update(
            index_elements=list(key),
            set_={c.name: lite_stmt.excluded[c.name] for c in table.c if c.name not in key},
        )
    raise StoreError(f"unsupported database {dialect_name!r}; use SQLite or PostgreSQL")


def plan_batch(records: Sequence[Record], statements: BatchStatements) -> list[Step]:
    """The steps that make `records` durable, in foreign-key-safe order.

    Raises TypeError if a value cannot be encoded as JSON; the store turns that
    into a failed commit.
    """
    created: list[Row] = []
    nodes: dict[tuple[str, str], Row] = {}
    attempts: dict[tuple[str, str, int, int], Row] = {}
    events: list[Row] = []
    variables: dict[tuple[str, str, str], Row] = {}
    logs: list[Row] = []
    updates: dict[str, Row] = {}
    applied: list[Row] = []

    for record in records:
        # Most frequent first: a node publishes events and variables more than anything.
        if isinstance(record, EventAppended):
            events.append(_event_row(record))
        elif isinstance(record, NodeUpdated):
            nodes[(record.execution_id, record.node_id)] = _node_row(record)
        elif isinstance(record, VariableWritten):
            key = (record.execution_id, record.variable.scope, record.variable.name)
            variables[key] = _variable_row(record)
        elif isinstance(record, AttemptRecorded):
            attempt_key = (record.execution_id, record.node_id, record.item_index, record.attempt)
            attempts[attempt_key] = _attempt_row(record)
        elif isinstance(record, LogAppended):
            logs.append(_log_row(record))
        elif isinstance(record, ExecutionCreated):
            created.append(_created_row(record))
        elif isinstance(record, ExecutionUpdated):
            updates[record.execution_id] = _updated_row(record)
        elif isinstance(record, InboxApplied):
            applied.append(
                {
                    "message_id": record.message_id,
                    "applied_at": record.applied_at,
                    "refusal": record.refusal,
                }
            )
        else:
            raise TypeError(f"not a state-store record: {record!r:.200}")

    plan = (
        (statements.insert_execution, created),
        (statements.upsert_node, list(nodes.values())),
        (statements.upsert_attempt, list(attempts.values())),
        (statements.insert_event, events),
        (statements.upsert_variable, list(variables.values())),
        (statements.insert_log, logs),
        (statements.update_execution, list(updates.values())),
        (statements.mark_applied, applied),
    )
    return [Step(statement, rows) for statement, rows in plan if rows]


def _created_row(r: ExecutionCreated) -> Row:
    return {
        "id": r.execution_id,
        "pipeline_name": r.pipeline_name,
        "pipeline_version": r.pipeline_version,
        "definition_text": r.definition_text,
        "definition_path": r.definition_path,
        "inputs": encode_json(r.inputs),
        "status": "running",
        "created_at": r.created_at,
        "updated_at": r.created_at,
        "finished_at": None,
        "outputs": None,
        "error": None,
        "parent_execution_id": r.parent_execution_id,
    }


def _updated_row(r: ExecutionUpdated) -> Row:
    return {
        "target_id": r.execution_id,
        "status": r.status.value,
        "updated_at": r.updated_at,
        "finished_at": r.finished_at,
        "outputs": None if r.outputs is None else encode_json(r.outputs),
        "error": r.error,
    }


def _node_row(r: NodeUpdated) -> Row:
    return {
        "execution_id": r.execution_id,
        "node_id": r.node_id,
        "state": r.state.value,
        "attempts": r.attempts,
        "updated_at": r.updated_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "error": r.error,
        "reason": r.reason,
    }


def _attempt_row(r: AttemptRecorded) -> Row:
    return {
        "execution_id": r.execution_id,
        "node_id": r.node_id,
        "item_index": r.item_index,
        "attempt": r.attempt,
        "status": r.status.value,
        "idempotency_key": r.idempotency_key,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "error_type": r.error_type,
        "error_message": r.error_message,
    }


def _event_row(r: EventAppended) -> Row:
    e = r.event
    return {
        "execution_id": e.execution_id,
        "seq": e.seq,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "source": e.source,
        "timestamp": e.timestamp,
        "payload": encode_json(e.payload),
    }


def _variable_row(r: VariableWritten) -> Row:
    v = r.variable
    return {
        "execution_id": r.execution_id,
        "scope": v.scope,
        "name": v.name,
        "value": encode_json(v.value),
        "type": v.type,
        "metadata": encode_json(v.metadata),
        "artifact": None if v.artifact is None else encode_json(v.artifact.to_json()),
        "created_at": v.created_at,
    }


def _log_row(r: LogAppended) -> Row:
    return {
        "execution_id": r.execution_id,
        "node_id": r.node_id,
        "attempt": r.attempt,
        "item_index": r.item_index,
        "stream": r.stream,
        "message": r.message,
        "at": r.at,
    }
