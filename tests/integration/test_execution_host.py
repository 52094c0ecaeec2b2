"""The server's ExecutionHost on SQLite and PostgreSQL: many executions on one loop,
requests applied durably before the call returns, the one inbox reader, starts
made idempotent by a key, and a graceful close that leaves the rest resumable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from whenflow.domain.records import MessageKind
from whenflow.domain.states import ExecutionStatus
from whenflow.dsl.program import PipelineProgram
from whenflow.services import server_reads
from whenflow.services.execution_host import ExecutionHost
from whenflow.services.idempotent_starts import IdempotencyConflict
from whenflow.services.pipelines import load_program
from whenflow.services.server import ServerParts, open_server
from whenflow.services.settings import Settings
from whenflow.storage import queries

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MANY = 30


@pytest.fixture
async def parts(db_url: str, tmp_path: Path) -> AsyncIterator[ServerParts]:
    settings = Settings(database_url=db_url, artifacts_url=str(tmp_path / "artifacts"))
    async with open_server(settings, grace_s=5.0, inbox_poll_s=0.05) as opened:
        yield opened


@pytest.fixture
def approval_gate() -> PipelineProgram:
    return load_program(EXAMPLES / "approval_gate.yaml")


async def _last_event(host: ExecutionHost, execution_id: str) -> str:
    """Follow the execution's events to its end; the last event's type."""
    last = ""
    async with asyncio.timeout(60):
        async for event in host.follow_events(execution_id):
            last = event.event_type
    return last


async def test_many_executions_wait_at_once_and_decisions_are_durable_on_return(
    parts: ServerParts, approval_gate: PipelineProgram
) -> None:
    host = parts.host
    started = await asyncio.gather(*(host.start(approval_gate, {}) for _ in range(MANY)))
    ids = [s.execution_id for s in started]
    assert len(set(ids)) == MANY
    assert {s.status for s in started} == {"waiting"}
    assert frozenset(ids) <= host.running  # (with what it resumed from earlier tests)

    decided = await asyncio.gather(
        *(
            host.request(eid, MessageKind.APPROVE, "review", {"by": "alice", "comment": str(i)})
            for i, eid in enumerate(ids)
        )
    )
    assert all(state.applied and state.refusal is None for state in decided)
    # Durable when the call returned: the stored node states already show it.
    for eid in ids:
        stored = await queries.get_nodes(host.service.store.engine, eid)
        nodes = {n.node_id: n.state.value for n in stored}
        assert nodes["review"] == "completed"
    assert (
        await asyncio.gather(*(_last_event(host, eid) for eid in ids))
        == ["pipeline.completed"] * MANY
    )
    shown = await host.service.show(ids[7])
    assert shown.nodes["review"].outputs["comment"] == "7"
    assert shown.nodes["ship"].status.value == "completed"


async def test_a_request_stored_by_another_process_reaches_the_execution(
    parts: ServerParts, approval_gate: PipelineProgram
) -> None:
    host = parts.host
    execution_id = (await host.start(approval_gate, {})).execution_id
    # What `whenflow reject` in another process does: store it in the inbox only.
    await host.service.post(execution_id, MessageKind.REJECT, "review", {"by": "bob"})
    assert await _last_event(host, execution_id) == "pipeline.completed"
    shown = await host.service.show(execution_id)
    assert shown.outputs["decision"] == "rejected"
    assert shown.nodes["roll_back"].status.value == "completed"


async def test_the_same_key_starts_one_execution(
    parts: ServerParts, approval_gate: PipelineProgram
) -> None:
    host = parts.host
    body = {"inputVariables": {}}
    starts = await asyncio.gather(
        *(host.start(approval_gate, {}, idempotency_key="k", request=body) for _ in range(5))
    )
    assert len({s.execution_id for s in starts}) == 1
    assert sorted(s.created for s in starts) == [False, False, False, False, True]
    with pytest.raises(IdempotencyConflict):
        await host.start(approval_gate, {}, idempotency_key="k", request={"other": 1})


async def test_close_leaves_unfinished_executions_resumable(
    db_url: str, tmp_path: Path, approval_gate: PipelineProgram
) -> None:
    settings = Settings(database_url=db_url, artifacts_url=str(tmp_path / "artifacts"))
    async with open_server(settings, grace_s=1.0) as first:
        execution_id = (await first.host.start(approval_gate, {})).execution_id
    async with open_server(settings, grace_s=1.0, inbox_poll_s=0.05) as second:
        host = second.host
        await asyncio.wait_for(host.resumed_once.wait(), 30)
        assert execution_id in host.running  # the lease was released at close: no wait
        state = await host.request(execution_id, MessageKind.APPROVE, "review", {"by": "bob"})
        assert state.refusal is None
        assert await _last_event(host, execution_id) == "pipeline.completed"


async def test_executions_page_newest_first_by_filter_and_approvals_are_listed(
    parts: ServerParts, approval_gate: PipelineProgram
) -> None:
    host = parts.host
    ids = [(await host.start(approval_gate, {})).execution_id for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await server_reads.page_executions(
            host.service, limit=2, cursor=cursor, statuses=[ExecutionStatus.WAITING]
        )
        seen.extend(r.execution_id for r in page.rows)
        cursor = page.cursor
        if cursor is None:
            break
    # The PostgreSQL database is shared by the tests of a session: others' rows too.
    assert len(seen) == len(set(seen))
    assert [eid for eid in seen if eid in ids] == list(reversed(ids))
    only = await server_reads.page_executions(host.service, pipeline="nope")
    assert only.rows == []
    pending = {p.execution_id: p for p in await server_reads.pending_approvals(host.service)}
    assert set(ids) <= set(pending)
    assert {pending[eid].message for eid in ids} == {"Ship app-1.4.2.tar.gz to production?"}


CHILD = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: child_gate, version: 1.0.0}
spec:
  nodes:
    - id: review
      task: {type: approval, message: "go on?"}
"""
PARENT = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: parent_of_gate, version: 1.0.0}
spec:
  nodes:
    - id: sub
      task: {type: pipeline, pipeline: ./child.yaml}
"""


async def _first(host: ExecutionHost, execution_id: str, event_type: str) -> dict[str, object]:
    async with asyncio.timeout(60):
        async for event in host.follow_events(execution_id):
            if event.event_type == event_type:
                return dict(event.payload)
    raise AssertionError(f"{execution_id} ended without {event_type}")


async def test_a_sub_pipeline_gets_its_requests_from_the_one_inbox_reader(
    parts: ServerParts, tmp_path: Path
) -> None:
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "parent.yaml").write_text(PARENT)
    host = parts.host
    parent_id = (await host.start(load_program(tmp_path / "parent.yaml"), {})).execution_id
    child_id = str((await _first(host, parent_id, "sub.child_started"))["execution_id"])
    await _first(host, child_id, "review.waiting")
    pollers = [t for t in asyncio.all_tasks() if t.get_name().startswith("whenflow-inbox:")]
    assert pollers == []  # no execution, not even a child, polls the inbox itself

    state = await host.request(child_id, MessageKind.APPROVE, "review", {"by": "ann"})
    assert (state.applied, state.refusal) == (True, None)
    assert await _last_event(host, parent_id) == "pipeline.completed"
    shown = await host.service.show(child_id)
    assert shown.nodes["review"].outputs["by"] == "ann"
