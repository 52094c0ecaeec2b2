"""The group-commit state store against real SQLite and PostgreSQL (DESIGN.md §7)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.errors import ExecutionNotFound, StoreError
from whenflow.domain.events import Event
from whenflow.domain.records import (
    AttemptRecorded,
    EventAppended,
    ExecutionCreated,
    ExecutionUpdated,
    LogAppended,
    NodeUpdated,
    Record,
    VariableWritten,
)
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.domain.variables import ArtifactRef, Variable
from whenflow.storage import queries, tables
from whenflow.storage.state_store import MAX_BATCH_RECORDS, SqlStateStore, open_state_store

T0 = 1_700_000_000.25


def new_id() -> str:
    return str(uuid.uuid4())


def created(execution_id: str, **overrides: Any) -> ExecutionCreated:
    fields: dict[str, Any] = {
        "execution_id": execution_id,
        "pipeline_name": "demo",
        "pipeline_version": "1.0.0",
        "definition_text": "apiVersion: whenflow/v1\nkind: Pipeline\n",
        "definition_path": "/tmp/demo.yaml",
        "inputs": {"start_date": "2024-01-01", "n": 3},
        "created_at": T0,
    }
    fields.update(overrides)
    return ExecutionCreated(**fields)


def event(execution_id: str, seq: int, event_type: str = "a.completed", **payload: Any) -> Event:
    return Event(
        new_id(), execution_id, seq, event_type, event_type.split(".")[0], T0 + seq, payload
    )


def node_burst(execution_id: str, index: int) -> list[Record]:
    """The five records a node's life produces, as the dispatcher appends them."""
    node = f"n{index}"
    return [
        NodeUpdated(execution_id, node, NodeState.RUNNING, 1, T0, started_at=T0),
        AttemptRecorded(
            execution_id, node, -1, 1, NodeState.COMPLETED, f"{execution_id}/{node}", T0, T0 + 1
        ),
        EventAppended(event(execution_id, index + 2, f"{node}.completed")),
        VariableWritten(execution_id, Variable(node, "v", index, "integer", T0)),
        NodeUpdated(execution_id, node, NodeState.COMPLETED, 1, T0 + 1, T0, T0 + 1),
    ]


async def count(engine: AsyncEngine, table: sa.Table, execution_id: str) -> int:
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(table.c.execution_id == execution_id)
        return int(await conn.scalar(query) or 0)


async def test_every_record_type_round_trips(store: SqlStateStore, engine: AsyncEngine) -> None:
    eid = new_id()
    artifact = ArtifactRef("file:///tmp/a.json", 12, "ab" * 32, "application/json", "value", "a")
    store.append(
        [
            created(eid, parent_execution_id=None),
            EventAppended(event(eid, 1, "pipeline.started")),
            NodeUpdated(eid, "extract", NodeState.RUNNING, 1, T0 + 1, started_at=T0 + 1),
            AttemptRecorded(eid, "extract", -1, 1, NodeState.RUNNING, f"{eid}/extract", T0 + 1),
            LogAppended(eid, "extract", 1, -1, "stdout", "héllo\n", T0 + 1.5),
            LogAppended(eid, "extract", 1, -1, "stderr", "warn", T0 + 1.6),
            VariableWritten(
                eid,
                Variable("extract", "rows", [1, {"a": None}], "array", T0 + 2, {"unit": "rows"}),
            ),
            VariableWritten(
                eid, Variable("extract", "big", None, "object", T0 + 2, artifact=artifact)
            ),
            VariableWritten(eid, Variable("pipeline.input", "n", 3, "integer", T0)),
            AttemptRecorded(
                eid,
                "extract",
                -1,
                1,
                NodeState.FAILED,
                f"{eid}/extract",
                T0 + 1,
                T0 + 2,
                "ValueError",
                "bad row",
            ),
            NodeUpdated(eid, "extract", NodeState.FAILED, 1, T0 + 2, T0 + 1, T0 + 2, "bad row"),
            EventAppended(event(eid, 2, "extract.failed", error="ValueError", message="bad row")),
            ExecutionUpdated(
                eid, ExecutionStatus.FAILED, T0 + 3, T0 + 3, {"q": 0.5}, "extract failed"
            ),
        ]
    )
    await store.flush()
    snap = await store.load_execution(eid)

    assert (snap.execution_id, snap.pipeline_name, snap.pipeline_version) == (eid, "demo", "1.0.0")
    assert snap.definition_text.startswith("apiVersion")
    assert snap.definition_path == "/tmp/demo.yaml"
    assert snap.inputs == {"start_date": "2024-01-01", "n": 3}
    assert snap.status is ExecutionStatus.FAILED
    assert (snap.created_at, snap.finished_at) == (T0, T0 + 3)
    assert snap.outputs == {"q": 0.5}
    assert snap.error == "extract failed"
    assert [e.event_type for e in snap.events] == ["pipeline.started", "extract.failed"]
    assert snap.events[1].payload == {"error": "ValueError", "message": "bad row"}
    assert snap.events[1].timestamp == T0 + 2
    by_name = {(v.scope, v.name): v for v in snap.variables}
    assert by_name[("extract", "rows")].value == [1, {"a": None}]
    assert by_name[("extract", "rows")].metadata == {"unit": "rows"}
    assert by_name[("extract", "big")].artifact == artifact
    assert by_name[("pipeline.input", "n")] == Variable("pipeline.input", "n", 3, "integer", T0)
    assert snap.nodes == (
        NodeUpdated(eid, "extract", NodeState.FAILED, 1, T0 + 2, T0 + 1, T0 + 2, "bad row"),
    )
    (attempt,) = snap.attempts
    assert attempt.status is NodeState.FAILED
    assert (attempt.error_type, attempt.error_message) == ("ValueError", "bad row")

    logs = await queries.get_logs(engine, eid)
    assert [(line.stream, line.message) for line in logs] == [
        ("stdout", "héllo\n"),
        ("stderr", "warn"),
    ]
    assert logs[0].id < logs[1].id
    assert await queries.get_logs(engine, eid, node_id="other") == []
    assert await queries.get_logs(engine, eid, after_id=logs[0].id) == [logs[1]]


async def test_bursts_without_awaiting_are_all_durable_in_seq_order(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    store.append([created(eid), EventAppended(event(eid, 1, "pipeline.started"))])
    for burst in range(5):
        for index in range(burst * 40, burst * 40 + 40):
            store.append(node_burst(eid, index))
    await store.flush()

    assert store.pending == 0
    events = await queries.get_events(engine, eid)
    assert [e.seq for e in events] == list(range(1, 202))
    assert await count(engine, tables.node_states, eid) == 200
    nodes = await queries.get_nodes(engine, eid)
    assert {n.state for n in nodes} == {NodeState.COMPLETED}
    assert [e.seq for e in await queries.get_events(engine, eid, after_seq=199)] == [200, 201]


async def test_what_is_durable_after_each_flush_is_a_prefix(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    store.append([created(eid)])
    appended = 0
    flushes: list[asyncio.Task[None]] = []
    for round_ in range(6):
        for _ in range(25):
            appended += 1
            store.append([EventAppended(event(eid, appended))])
        flushes.append(asyncio.create_task(store.flush()))
        await asyncio.sleep(0)  # let the writer start a commit while we append more
        if round_ % 2:
            await flushes[-1]
            seqs = [e.seq for e in await queries.get_events(engine, eid)]
            # Contiguous from 1 and at least everything before the flush.
            assert seqs == list(range(1, len(seqs) + 1))
            assert len(seqs) >= appended
    await asyncio.gather(*flushes)
    assert [e.seq for e in await queries.get_events(engine, eid)] == list(range(1, appended + 1))


async def test_upserts_of_one_key_in_a_batch_coalesce_last_wins(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    store.append([created(eid)])
    states = [NodeState.PENDING, NodeState.RUNNING, NodeState.RETRYING] * 30 + [NodeState.COMPLETED]
    for attempts, state in enumerate(states, start=1):
        store.append(
            [
                NodeUpdated(eid, "a", state, attempts, T0 + attempts),
                VariableWritten(eid, Variable("a", "x", attempts, "integer", T0 + attempts)),
                AttemptRecorded(eid, "a", 0, 1, state, f"{eid}/a/0", T0, T0 + attempts),
                ExecutionUpdated(eid, ExecutionStatus.RUNNING, T0 + attempts),
            ]
        )
    await store.flush()

    assert store.commits <= 2
    snap = await store.load_execution(eid)
    assert snap.nodes == (NodeUpdated(eid, "a", NodeState.COMPLETED, 91, T0 + 91),)
    assert [(v.name, v.value) for v in snap.variables] == [("x", 91)]
    assert [(a.status, a.finished_at) for a in snap.attempts] == [(NodeState.COMPLETED, T0 + 91)]


async def test_upserts_across_batches_overwrite(store: SqlStateStore) -> None:
    eid = new_id()
    store.append([created(eid), NodeUpdated(eid, "a", NodeState.RUNNING, 1, T0, started_at=T0)])
    store.append([VariableWritten(eid, Variable("a", "x", "old", "string", T0))])
    await store.flush()
    store.append([NodeUpdated(eid, "a", NodeState.COMPLETED, 1, T0 + 1, T0, T0 + 1)])
    store.append([VariableWritten(eid, Variable("a", "x", {"new": True}, "object", T0 + 1))])
    await store.flush()

    snap = await store.load_execution(eid)
    assert [(n.state, n.finished_at) for n in snap.nodes] == [(NodeState.COMPLETED, T0 + 1)]
    assert [v.value for v in snap.variables] == [{"new": True}]


async def test_execution_update_writes_the_full_mutable_state(store: SqlStateStore) -> None:
    eid = new_id()
    store.append([created(eid)])
    store.append([ExecutionUpdated(eid, ExecutionStatus.FAILED, T0 + 1, T0 + 1, None, "boom")])
    await store.flush()
    store.append([ExecutionUpdated(eid, ExecutionStatus.RUNNING, T0 + 2)])  # a resume
    await store.flush()

    snap = await store.load_execution(eid)
    assert (snap.status, snap.finished_at, snap.error) == (ExecutionStatus.RUNNING, None, None)


async def test_a_thousand_appends_without_yielding_are_a_few_commits(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    store.append([created(eid)])
    await store.flush()
    before = store.commits  # batches committed (SQLite commits on its writer thread's engine)

    for seq in range(1, 1001):
        store.append([EventAppended(event(eid, seq))])
    await store.flush()

    assert 1 <= store.commits - before <= 3
    assert await count(engine, tables.events, eid) == 1000


async def test_records_streaming_in_share_commits_under_the_commit_interval(
    engine: AsyncEngine,
) -> None:
    # A chain of fast nodes appends one small unit per loop turn. With an
    # interval, the first append commits at once and the rest wait for the
    # interval (or a flush) instead of costing one commit each.
    eid = new_id()
    async with SqlStateStore(engine, commit_interval_s=3600) as store:
        store.append([created(eid)])
        for seq in range(1, 201):
            store.append([EventAppended(event(eid, seq))])
            await asyncio.sleep(0)  # one loop turn per unit, as the dispatcher's are
        await store.flush()  # must not wait out the hour

        assert store.commits == 2
        assert await count(engine, tables.events, eid) == 200

        store.append([EventAppended(event(eid, 201))])
        await store.flush()  # a flush ends any pacing delay, every time
        assert await count(engine, tables.events, eid) == 201


async def test_close_commits_what_waits_for_the_commit_interval(engine: AsyncEngine) -> None:
    eid = new_id()
    async with SqlStateStore(engine, commit_interval_s=3600) as store:
        store.append([created(eid)])
        await store.flush()
        store.append([EventAppended(event(eid, 1))])
        await asyncio.sleep(0)

    assert await count(engine, tables.events, eid) == 1


async def test_a_backlog_commits_in_bounded_chunks(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    store.append([created(eid)])
    await store.flush()
    before = store.commits
    total = 2 * MAX_BATCH_RECORDS + 1

    for seq in range(1, total + 1):
        store.append([EventAppended(event(eid, seq))])
    await store.flush()

    assert store.commits - before == 3  # two full chunks and the last record
    assert await count(engine, tables.events, eid) == total


async def test_a_chunk_never_splits_a_unit_of_work(engine: AsyncEngine) -> None:
    """A unit (one append) lands whole: the chunk limit cuts between units only."""
    eid = new_id()
    store = SqlStateStore(engine)
    await store.start()
    store.append([created(eid)])
    await store.flush()
    backlog = MAX_BATCH_RECORDS - 1
    store.append([EventAppended(event(eid, seq)) for seq in range(1, backlog + 1)])
    # A unit of two whose second record fails: its first record must not land either.
    store.append([EventAppended(event(eid, backlog + 1)), EventAppended(event(eid, 1))])

    with pytest.raises(StoreError):
        await store.flush()
    with pytest.raises(StoreError):
        await store.close()
    assert await count(engine, tables.events, eid) == backlog


async def test_a_unit_larger_than_a_chunk_commits_whole(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    store.append([created(eid)])
    await store.flush()
    before = store.commits
    total = MAX_BATCH_RECORDS + 5
    store.append([EventAppended(event(eid, seq)) for seq in range(1, total + 1)])
    await store.flush()
    assert store.commits - before == 1
    assert await count(engine, tables.events, eid) == total


async def test_a_failed_commit_surfaces_from_flush_and_poisons_the_store(
    engine: AsyncEngine,
) -> None:
    eid = new_id()
    store = SqlStateStore(engine)
    await store.start()
    store.append([created(eid), EventAppended(event(eid, 1))])
    await store.flush()
    store.append([EventAppended(event(eid, 2)), EventAppended(event(eid, 2))])  # same seq
    pending = asyncio.create_task(store.flush())

    with pytest.raises(StoreError, match="could not commit") as raised:
        await store.flush()
    assert isinstance(raised.value.__cause__, IntegrityError)
    with pytest.raises(StoreError):
        await pending
    with pytest.raises(StoreError):
        await store.flush()
    with pytest.raises(StoreError):
        store.append([EventAppended(event(eid, 3))])
    with pytest.raises(StoreError):
        await store.close()

    # The failed batch is absent as a whole; the committed prefix stays.
    assert [e.seq for e in await queries.get_events(engine, eid)] == [1]


async def test_flush_with_nothing_pending_returns_and_unstarted_flush_raises(
    engine: AsyncEngine,
) -> None:
    store = SqlStateStore(engine)
    await store.flush()  # nothing appended: nothing to wait for
    store.append([created(new_id())])
    with pytest.raises(StoreError, match="not started"):
        await store.flush()
    await store.start()
    await store.flush()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append([created(new_id())])


async def test_close_commits_what_is_buffered(engine: AsyncEngine) -> None:
    eid = new_id()
    async with SqlStateStore(engine) as store:
        store.append([created(eid), EventAppended(event(eid, 1))])
    assert [e.seq for e in await queries.get_events(engine, eid)] == [1]


async def test_unknown_execution_raises_not_found(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    missing = new_id()
    with pytest.raises(ExecutionNotFound):
        await store.load_execution(missing)
    for read in (queries.get_events, queries.get_variables, queries.get_nodes, queries.get_logs):
        with pytest.raises(ExecutionNotFound):
            await read(engine, missing)


async def test_list_executions_newest_first_with_filters(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    base = 2_000_000_000.0  # newer than anything else in a shared database
    ids = [new_id() for _ in range(3)]
    store.append([created(eid, created_at=base + i) for i, eid in enumerate(ids)])
    store.append([ExecutionUpdated(ids[1], ExecutionStatus.COMPLETED, base + 5, base + 5)])
    await store.flush()

    newest = await queries.list_executions(engine, limit=3)
    assert [s.id for s in newest] == ids[::-1]
    assert newest[1].status is ExecutionStatus.COMPLETED
    assert newest[1].finished_at == base + 5
    done = await queries.list_executions(engine, status="completed", limit=500)
    assert ids[1] in {s.id for s in done}
    assert not {ids[0], ids[2]} & {s.id for s in done}
    async with engine.connect() as conn:  # the caller's connection, the caller's transaction
        assert len(await queries.list_executions(conn, limit=2, pipeline="demo")) == 2


async def test_open_state_store_defaults_to_sqlite_under_whenflow_home(tmp_home: Path) -> None:
    eid = new_id()
    async with open_state_store() as store:
        store.append([created(eid)])
        await store.flush()
        assert (await store.load_execution(eid)).pipeline_name == "demo"
    assert (tmp_home / "whenflow.db").is_file()
