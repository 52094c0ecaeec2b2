"""One owner per execution, on real SQLite and PostgreSQL (DESIGN.md §7, issue 13 item 3).

Two stores on one database are two processes as far as the lease is concerned
(each has its own owner id). A stalled owner is a store whose lease is never
renewed between commits (`renew_s` of an hour); expiry is awaited by polling
the owner row, never by sleeping a guessed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.errors import ExecutionNotFound, ExecutionOwned, OwnershipLost, StoreError
from whenflow.domain.events import Event
from whenflow.domain.records import EventAppended, ExecutionCreated, ExecutionUpdated
from whenflow.domain.states import ExecutionStatus
from whenflow.domain.task_io import TaskContext, TaskRequest, TaskResult
from whenflow.dsl.load import load_program_text
from whenflow.services.executions import ExecutionService, Settings
from whenflow.storage import leases, queries
from whenflow.storage.leases import LeasePolicy, Owner
from whenflow.storage.state_store import SqlStateStore
from whenflow.testing import InlineRunner

STALLED = LeasePolicy(lease_s=0.3, renew_s=3600.0)  # renewed by commits only


def new_id() -> str:
    return str(uuid.uuid4())


def created(execution_id: str) -> ExecutionCreated:
    return ExecutionCreated(execution_id, "demo", "1.0.0", "", None, {}, time.time())


def event(execution_id: str, seq: int) -> EventAppended:
    return EventAppended(
        Event(new_id(), execution_id, seq, f"n{seq}.completed", f"n{seq}", time.time(), {})
    )


async def expired(engine: AsyncEngine, execution_id: str) -> leases.OwnerRow:
    """Poll the owner row until its lease has run out (nobody renews it)."""
    deadline = time.monotonic() + 30
    while True:
        row = await leases.read_owner(engine, execution_id)
        assert row is not None
        if row.expires_at < time.time():
            return row
        assert time.monotonic() < deadline, row
        await asyncio.sleep(0.02)  # the poll interval of a condition in the database


@pytest.fixture
async def stalled(engine: AsyncEngine) -> AsyncIterator[SqlStateStore]:
    """A store whose leases expire 0.3 s after its last commit."""
    store = SqlStateStore(engine, lease=STALLED)
    await store.start()
    yield store
    with contextlib.suppress(StoreError):  # a test that makes it lose its lease fails it
        await store.close()


async def test_creating_an_execution_takes_its_lease_in_the_same_commit(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    before = time.time()
    store.append([created(eid)])
    await store.flush()
    row = await leases.read_owner(engine, eid)
    assert row is not None
    assert (row.owner_id, row.host, row.pid) == (
        store.owner.owner_id,
        store.owner.host,
        store.owner.pid,
    )
    assert before <= row.acquired_at <= row.heartbeat_at
    assert row.expires_at == pytest.approx(row.heartbeat_at + store.lease.lease_s)
    assert store.held == {eid}


async def test_a_live_owner_refuses_a_claim_and_names_itself(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    store.append([created(eid)])
    await store.flush()
    async with SqlStateStore(engine) as other:
        with pytest.raises(ExecutionOwned) as refused:
            await other.claim(eid)
        with pytest.raises(ExecutionNotFound):
            await other.claim(new_id())
    error = refused.value
    assert (error.host, error.pid) == (store.owner.host, store.owner.pid)
    message = str(error)
    assert f"owned by process {store.owner.pid} on host {store.owner.host!r}" in message
    assert "since " in message
    assert "lease expires " in message
    assert "UTC" in message
    row = await leases.read_owner(engine, eid)
    assert row is not None
    assert row.owner_id == store.owner.owner_id


async def test_an_expired_lease_is_taken_over_and_the_stale_owner_stops_writing(
    stalled: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    stalled.append([created(eid), event(eid, 1)])
    await stalled.flush()
    await expired(engine, eid)

    async with SqlStateStore(engine) as taker:
        await taker.claim(eid)
        row = await leases.read_owner(engine, eid)
        assert row is not None
        assert row.owner_id == taker.owner.owner_id
        taker.append([event(eid, 2)])
        await taker.flush()

        # The stale owner wakes up and writes: its commit is fenced off, whole.
        stalled.append([event(eid, 3)])
        with pytest.raises(OwnershipLost, match=f"execution {eid} was taken over by process"):
            await stalled.flush()
        with pytest.raises(StoreError):
            stalled.append([event(eid, 4)])
        assert [e.seq for e in await queries.get_events(engine, eid)] == [1, 2]
        assert taker.held == {eid}


async def test_racing_takeovers_of_an_expired_lease_have_exactly_one_winner(
    stalled: SqlStateStore, engine: AsyncEngine
) -> None:
    eid = new_id()
    stalled.append([created(eid)])
    await stalled.flush()
    await expired(engine, eid)
    async with SqlStateStore(engine) as first, SqlStateStore(engine) as second:
        outcomes = await asyncio.gather(first.claim(eid), second.claim(eid), return_exceptions=True)
        won = [o for o in outcomes if o is None]
        lost = [o for o in outcomes if isinstance(o, ExecutionOwned)]
        assert (len(won), len(lost)) == (1, 1), outcomes
        winner = first if outcomes[0] is None else second
        row = await leases.read_owner(engine, eid)
        assert row is not None
        assert row.owner_id == winner.owner.owner_id


async def test_an_idle_owner_renews_its_lease(engine: AsyncEngine) -> None:
    eid = new_id()
    policy = LeasePolicy(lease_s=0.3, renew_s=0.05)
    async with SqlStateStore(engine, lease=policy) as store:
        store.append([created(eid)])
        await store.flush()
        first = await leases.read_owner(engine, eid)
        assert first is not None
        deadline = time.monotonic() + 30
        renewals = set()
        while len(renewals) < 3:  # three heartbeats without a single record appended
            row = await leases.read_owner(engine, eid)
            assert row is not None
            assert row.expires_at > time.time() - 0.3  # never lapses for long
            renewals.add(row.heartbeat_at)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert min(renewals) >= first.heartbeat_at


async def test_the_end_of_an_execution_and_close_release_the_lease(engine: AsyncEngine) -> None:
    ended, interrupted = new_id(), new_id()
    async with SqlStateStore(engine) as store:
        store.append([created(ended), created(interrupted)])
        store.append([ExecutionUpdated(ended, ExecutionStatus.COMPLETED, time.time())])
        await store.flush()
        assert await leases.read_owner(engine, ended) is None
        assert await leases.read_owner(engine, interrupted) is not None
        assert store.held == {interrupted}
    assert await leases.read_owner(engine, interrupted) is None
    async with SqlStateStore(engine) as successor:
        await successor.claim(interrupted)  # at once: no lease to wait for


async def test_claims_by_the_same_owner_are_idempotent(engine: AsyncEngine) -> None:
    eid = new_id()
    owner = Owner.of_this_process()
    async with SqlStateStore(engine, owner=owner) as store:
        store.append([created(eid)])
        await store.flush()
    async with SqlStateStore(engine, owner=owner) as again:
        await again.claim(eid)
        first = await leases.read_owner(engine, eid)
        await leases.claim(engine, eid, owner, LeasePolicy(), time.time())
        second = await leases.read_owner(engine, eid)
        assert first is not None
        assert second is not None
        assert second.acquired_at == first.acquired_at  # renewed, not re-acquired


async def test_a_child_never_outlives_the_lease_of_the_execution_that_started_it(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    """A process dies just after starting a sub-pipeline: whoever takes the parent over
    at its expiry must be able to take its child over too (the child is adopted)."""
    parent, child = new_id(), new_id()
    store.append([created(parent)])
    await store.flush()
    store.append([ExecutionCreated(child, "child", "1.0.0", "", None, {}, time.time(), parent)])
    await store.flush()
    parent_row = await leases.read_owner(engine, parent)
    assert parent_row is not None
    taker, policy = Owner.of_this_process(), LeasePolicy()
    at_expiry = parent_row.expires_at  # the earliest time a takeover of the parent succeeds
    await leases.claim(engine, parent, taker, policy, at_expiry)
    await leases.claim(engine, child, taker, policy, at_expiry)
    for eid in (parent, child):
        row = await leases.read_owner(engine, eid)
        assert row is not None
        assert row.owner_id == taker.owner_id


async def test_an_adopted_child_never_outlives_the_lease_of_its_parent(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    """The same after a resume: the parent is held, its child is claimed later."""
    parent, child = new_id(), new_id()
    async with SqlStateStore(engine) as before:  # the child's first owner, interrupted
        before.append([ExecutionCreated(child, "child", "1.0.0", "", None, {}, time.time(), None)])
        await before.flush()
    store.append([created(parent)])
    await store.flush()
    await store.claim(child)
    store.append([event(child, 1)])  # the adopted child's first records
    await store.flush()
    parent_row = await leases.read_owner(engine, parent)
    child_row = await leases.read_owner(engine, child)
    assert parent_row is not None
    assert child_row is not None
    assert parent_row.expires_at >= child_row.expires_at


# --------------------------------------------------------- through the service

BLOCKING = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: owned, version: 1.0.0}
spec:
  nodes:
    - {id: work, task: {type: stamp}}
"""


class StampExecutor:
    """A custom task type: counts its calls; the first call blocks until released."""

    task_type = "stamp"

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    def check(self, task: TaskSpec) -> list[str]:
        return []

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        self.calls.append(request.attempt)
        self.started.set()
        if len(self.calls) == 1:
            await self.release.wait()
        return TaskResult(outputs={"attempt": request.attempt})


async def stop_like_a_crash(running: asyncio.Task[Any]) -> None:
    """Stop a run as a dying process would: the run, its attempts and its inbox reader end,
    nothing more is written, and the execution stays `running` in the store."""
    running.cancel()
    # The inbox reader too: its read would outlive the engine and leak a connection.
    workers = [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(("whenflow:work", "whenflow-inbox:"))
    ]
    for task in workers:
        task.cancel()
    await asyncio.gather(running, *workers, return_exceptions=True)


def stamp_runner(executor: StampExecutor) -> Any:
    from whenflow.backends.local import LocalRunner
    from whenflow.executors.registry import ExecutorRegistry, default_registry

    registry: ExecutorRegistry = default_registry()
    registry.register(executor)
    return LocalRunner(registry)


async def test_resume_of_a_running_execution_is_refused_while_its_owner_lives(
    db_url: str,
) -> None:
    executor = StampExecutor()
    runner = stamp_runner(executor)
    program = load_program_text(BLOCKING, runner, path="owned.yaml")
    settings = Settings(database_url=db_url)
    async with ExecutionService.open(settings, runner) as owner:
        ids: list[str] = []
        running = asyncio.create_task(
            owner.run(program, {}, on_event=lambda e: ids.append(e.execution_id))
        )
        await executor.started.wait()
        await owner.store.flush()
        async with ExecutionService.open(settings, runner) as intruder:
            with pytest.raises(ExecutionOwned, match=f"execution {ids[0]} is owned by process"):
                await intruder.resume(ids[0])
        executor.release.set()
        result = await running
    assert result.status is ExecutionStatus.COMPLETED
    assert executor.calls == [1]  # the refused resume ran nothing


async def test_an_execution_of_a_custom_executor_resumes_with_the_runner_that_ran_it(
    db_url: str,
) -> None:
    """Issue 13 item 11: resume used the built-in executors, whatever runner it was given."""
    executor = StampExecutor()
    runner = stamp_runner(executor)
    program = load_program_text(BLOCKING, runner, path="owned.yaml")
    settings = Settings(database_url=db_url)
    async with ExecutionService.open(settings, runner) as first:
        ids: list[str] = []
        running = asyncio.create_task(
            first.run(program, {}, on_event=lambda e: ids.append(e.execution_id))
        )
        await executor.started.wait()
        await first.store.flush()
        await stop_like_a_crash(running)
    async with ExecutionService.open(settings, runner) as second:
        assert (await second.show(ids[0])).status is ExecutionStatus.RUNNING
        result = await second.resume(ids[0])
    assert result.status is ExecutionStatus.COMPLETED
    assert result.nodes["work"].outputs == {"attempt": 2}
    assert executor.calls == [1, 2]


async def test_an_execution_of_an_inline_runner_resumes_with_it(db_url: str) -> None:
    """Another runner of the kind: python callables that exist only in the runner's table."""
    release = asyncio.Event()
    started = asyncio.Event()
    calls: list[int] = []

    async def hold(ctx: Any) -> dict[str, Any]:
        calls.append(ctx.attempt)
        started.set()
        if len(calls) == 1:
            await release.wait()
        return {"n": len(calls)}

    runner = InlineRunner({"only_here:hold": hold})
    text = BLOCKING.replace("{type: stamp}", '{type: python, callable: "only_here:hold"}')
    program = load_program_text(text, runner, path="owned.yaml")
    settings = Settings(database_url=db_url)
    async with ExecutionService.open(settings, runner) as first:
        ids: list[str] = []
        running = asyncio.create_task(
            first.run(program, {}, on_event=lambda e: ids.append(e.execution_id))
        )
        await started.wait()
        await first.store.flush()
        await stop_like_a_crash(running)
    async with ExecutionService.open(settings, runner) as second:
        result = await second.resume(ids[0])
    assert result.status is ExecutionStatus.COMPLETED
    assert result.nodes["work"].outputs == {"n": 2}


PARENT = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: parent, version: 1.0.0}
spec:
  nodes:
    - id: sub
      task: {type: pipeline, pipeline: ./child.yaml}
  outputs:
    attempt: "{{ sub.attempt }}"
"""

CHILD = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: child, version: 1.0.0}
spec:
  nodes:
    - {id: work, task: {type: stamp}}
  outputs:
    attempt: "{{ work.attempt }}"
"""


async def test_an_interrupted_run_leaves_its_sub_pipeline_resumable(
    db_url: str, tmp_path: Path
) -> None:
    """Ctrl-C or SIGTERM while a sub-pipeline runs halts the child like its parent: the
    child is not cancelled, so `resume` of the parent adopts it and completes."""
    from whenflow.dsl.load import load_program_file

    executor = StampExecutor()
    runner = stamp_runner(executor)
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "parent.yaml").write_text(PARENT)
    program = load_program_file(tmp_path / "parent.yaml", runner)
    settings = Settings(database_url=db_url)
    async with ExecutionService.open(settings, runner) as first:
        ids: list[str] = []
        running = asyncio.create_task(
            first.run(program, {}, on_event=lambda e: ids.append(e.execution_id))
        )
        await executor.started.wait()
        running.cancel()  # what SIGTERM (and Ctrl-C) does to the CLI's run
        await asyncio.gather(running, return_exceptions=True)
    async with ExecutionService.open(settings, runner) as second:
        [child_id] = await queries.get_child_ids(second.store.engine, ids[0])
        assert (await second.show(child_id)).status is ExecutionStatus.RUNNING
        result = await second.resume(ids[0])
    assert result.status is ExecutionStatus.COMPLETED, result.error
    assert result.outputs == {"attempt": 2}
    assert executor.calls == [1, 2]


async def test_a_resume_racing_the_end_of_its_run_does_not_reopen_the_execution(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`whenflow resume ID` just as the run of ID ends: the run's last commit drops its
    lease while the resume waits to claim it. The claim then succeeds, and the finished
    execution must be returned as it is, not resumed (no second ending, no new events)."""
    executor = StampExecutor()
    runner = stamp_runner(executor)
    program = load_program_text(BLOCKING, runner, path="owned.yaml")
    settings = Settings(database_url=db_url)
    async with ExecutionService.open(settings, runner) as owner:
        ids: list[str] = []
        running = asyncio.create_task(
            owner.run(program, {}, on_event=lambda e: ids.append(e.execution_id))
        )
        await executor.started.wait()
        await owner.store.flush()
        async with ExecutionService.open(settings, runner) as late:
            claim = late.store.claim

            async def claim_once_the_run_has_ended(execution_id: str) -> None:
                executor.release.set()
                assert (await running).status is ExecutionStatus.COMPLETED
                await claim(execution_id)

            monkeypatch.setattr(late.store, "claim", claim_once_the_run_has_ended)
            result = await late.resume(ids[0])
            events = [e.event_type for e in await late.events(ids[0])]
    assert result.status is ExecutionStatus.COMPLETED
    assert events.count("pipeline.completed") == 1
    assert events[-1] == "pipeline.completed"
    assert "pipeline.resumed" not in events
    assert executor.calls == [1]
