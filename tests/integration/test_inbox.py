"""The inbox on real SQLite and PostgreSQL: requests from outside reach a running execution.

`ExecutionService.send` stores a message the way `whenflow approve` does; the
execution, run by the same service, reads it at its next poll and marks it
applied in the commit that carries the events it caused (DESIGN.md §7).
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.errors import ExecutionNotFound, RequestRefused
from whenflow.domain.events import Event
from whenflow.domain.records import (
    EventAppended,
    ExecutionCreated,
    InboxApplied,
    MessageKind,
)
from whenflow.dsl.load import load_program_text
from whenflow.engine.runtime import ExecutionResult
from whenflow.services.executions import ExecutionService, Settings
from whenflow.storage import inbox, queries, tables
from whenflow.storage.state_store import SqlStateStore
from whenflow.testing import InlineRunner

PIPELINE = textwrap.dedent(
    """\
    apiVersion: whenflow/v1
    kind: Pipeline
    metadata: {name: gated, version: 1.0.0}
    spec:
      nodes:
        - {id: review, task: {type: approval, approvers: [alice]}}
        - {id: ship, startWhen: "event:review.approved && event:external.go", task: {type: noop}}
    """
)


async def start_waiting(
    service: ExecutionService,
) -> tuple[asyncio.Task[ExecutionResult], str]:
    """Run PIPELINE in the background until `review` waits durably; the task and the id."""
    program = load_program_text(PIPELINE, InlineRunner(), path="gated.yaml")
    waiting: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def listener(event: Any) -> None:
        if event.event_type == "review.waiting":
            waiting.set_result(event.execution_id)

    running = asyncio.create_task(service.run(program, {}, on_event=listener))
    execution_id = await waiting
    # The event is published before its commit; a request checks the durable state.
    await service.store.flush()
    return running, execution_id


async def test_a_message_is_marked_applied_in_the_batch_of_its_events(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = str(uuid.uuid4())
    store.append([ExecutionCreated(eid, "p", "1", "", None, {}, 1.0)])
    await store.flush()
    message_id = await inbox.post(engine, eid, MessageKind.EVENT, "go", {"n": 1}, 2.0)
    assert [m.message_id for m in await store.pending_messages(eid)] == [message_id]
    state = await inbox.state(engine, message_id)
    assert state is not None
    assert not state.applied

    event = Event("ev-1", eid, 1, "external.go", "external", 3.0, {"n": 1})
    store.append([EventAppended(event), InboxApplied(eid, message_id, 3.0)])
    await store.flush()
    assert await store.pending_messages(eid) == []
    state = await inbox.state(engine, message_id)
    assert state is not None
    assert (state.applied_at, state.refusal) == (3.0, None)
    assert [e.event_type for e in await queries.get_events(engine, eid)] == ["external.go"]


async def test_send_reaches_a_running_execution_and_waits_for_the_outcome(db_url: str) -> None:
    async with ExecutionService.open(Settings(database_url=db_url), InlineRunner()) as service:
        running, execution_id = await start_waiting(service)
        engine = service.store.engine

        with pytest.raises(
            RequestRefused,
            match=r"node 'ship' is not an approval node in pipeline gated; "
            r"its approval nodes: review",
        ):
            await service.send(execution_id, MessageKind.APPROVE, "ship", {"by": "alice"})
        with pytest.raises(
            RequestRefused,
            match=r"node 'reveiw' does not exist in pipeline gated; its approval nodes: review",
        ):
            await service.send(execution_id, MessageKind.REJECT, "reveiw", {"by": "alice"})
        with pytest.raises(RequestRefused, match="'Go!' is not an event name"):
            await service.send(execution_id, MessageKind.EVENT, "Go!")
        with pytest.raises(ExecutionNotFound):
            await service.send("nope", MessageKind.CANCEL)

        refused = await service.send(
            execution_id, MessageKind.APPROVE, "review", {"by": "bob"}, wait_s=30
        )
        assert refused.applied
        assert refused.refusal == "'bob' may not decide 'review'; approvers: alice"
        sent = await service.send(execution_id, MessageKind.EVENT, "go", {"k": "v"}, wait_s=30)
        assert (sent.applied, sent.refusal) == (True, None)
        approved = await service.send(
            execution_id, MessageKind.APPROVE, "review", {"by": "alice"}, wait_s=30
        )
        assert (approved.applied, approved.refusal) == (True, None)

        result = await running
        assert result.status.value == "completed"
        assert list(result.events) == [
            "pipeline.started",
            "review.waiting",
            "external.go",
            "review.approved",
            "review.completed",
            "ship.started",
            "ship.completed",
            "pipeline.completed",
        ]
        with pytest.raises(RequestRefused, match=r"has ended \(completed\)"):
            await service.send(execution_id, MessageKind.CANCEL)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    sa.select(tables.inbox.c.kind, tables.inbox.c.applied_at.is_not(None))
                    .where(tables.inbox.c.execution_id == execution_id)
                    .order_by(tables.inbox.c.id)
                )
            ).all()
        assert [tuple(r) for r in rows] == [("approve", True), ("event", True), ("approve", True)]


async def test_requests_to_an_ended_execution_are_refused_not_left_pending(db_url: str) -> None:
    async with ExecutionService.open(Settings(database_url=db_url), InlineRunner()) as service:
        running, execution_id = await start_waiting(service)
        engine = service.store.engine
        cancel = await service.send(execution_id, MessageKind.CANCEL, wait_s=30)
        assert (cancel.applied, cancel.refusal) == (True, None)
        assert (await running).status.value == "cancelled"

        # A request stored as the execution ended (past the checks): nobody applies it
        # any more, so asking for it again, or resuming, refuses it.
        late = await inbox.post(engine, execution_id, MessageKind.EVENT, "go", {}, 1.0)
        other = await inbox.post(engine, execution_id, MessageKind.EVENT, "go", {}, 1.0)
        result = await service.resume(execution_id)
        assert result.status.value == "cancelled"
        for message_id in (late, other):
            state = await inbox.state(engine, message_id)
            assert state is not None
            assert state.applied
            assert state.refusal == (
                "the execution ended (cancelled) before this request was applied"
            )
        assert await inbox.refuse_pending(engine, execution_id, "again", 2.0) == 0
