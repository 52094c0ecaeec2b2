"""Retrying a finished execution as a new one (DESIGN.md §11, "Control").

The new execution starts as a *resumed* one: its durable state is the part of
the old execution that succeeded, and `Orchestrator.resume` continues it the
way it continues an execution after a crash (`recovery`):

- nodes that **completed** keep their state, their outputs (variables,
  forEach items included; artifacts are referenced, not copied) and the
  events they published, so the triggers that depend on them replay as they
  were decided;
- every other node (failed, stopped, cancelled, skipped, never started) is
  pending again: its trigger is decided anew by the replayed events, so it
  runs again, or is skipped again when its condition is still false;
- the pipeline's inputs, its `pipeline.started` and the `external.*` events it
  received are kept. Seqs are renumbered from 1; event ids are new.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace

from whenflow.domain.events import EXTERNAL_SOURCE, PIPELINE_SOURCE, Event
from whenflow.domain.records import (
    EventAppended,
    ExecutionCreated,
    ExecutionSnapshot,
    Record,
    VariableWritten,
)
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.engine.foreach import ITEM_SCOPE_SUFFIX
from whenflow.engine.variable_pool import INPUT_SCOPE


def retry_of(
    old: ExecutionSnapshot, new_id: str, now: float
) -> tuple[list[Record], ExecutionSnapshot]:
    """The records that create execution `new_id` retrying `old`, and the snapshot to
    `resume` it from. `old` must have ended."""
    kept = {row.node_id for row in old.nodes if row.state is NodeState.COMPLETED}
    scopes = {INPUT_SCOPE, *kept, *(f"{node}{ITEM_SCOPE_SUFFIX}" for node in kept)}
    variables = tuple(v for v in old.variables if v.scope in scopes)
    nodes = tuple(replace(row, execution_id=new_id) for row in old.nodes if row.node_id in kept)
    events = _kept_events(old.events, kept, new_id)
    created = ExecutionCreated(
        execution_id=new_id,
        pipeline_name=old.pipeline_name,
        pipeline_version=old.pipeline_version,
        definition_text=old.definition_text,
        definition_path=old.definition_path,
        inputs=dict(old.inputs),
        created_at=now,
        retry_of=old.execution_id,
    )
    records: list[Record] = [created]
    records.extend(VariableWritten(new_id, v) for v in variables)
    records.extend(nodes)
    records.extend(EventAppended(e) for e in events)
    snapshot = ExecutionSnapshot(
        execution_id=new_id,
        pipeline_name=old.pipeline_name,
        pipeline_version=old.pipeline_version,
        definition_text=old.definition_text,
        definition_path=old.definition_path,
        inputs=dict(old.inputs),
        status=ExecutionStatus.RUNNING,
        created_at=now,
        finished_at=None,
        outputs=None,
        error=None,
        events=tuple(events),
        variables=variables,
        nodes=nodes,
        retry_of=old.execution_id,
    )
    return records, snapshot


def _kept_events(events: Sequence[Event], kept: set[str], new_id: str) -> list[Event]:
    found: list[Event] = []
    for event in events:
        keep = (
            event.source in kept
            or event.source == EXTERNAL_SOURCE
            or (event.source == PIPELINE_SOURCE and event.event_type == "pipeline.started")
        )
        if keep:
            found.append(
                replace(
                    event,
                    event_id=uuid.uuid4().hex,
                    execution_id=new_id,
                    seq=len(found) + 1,
                )
            )
    return found
