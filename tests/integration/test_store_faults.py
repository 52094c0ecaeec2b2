"""Store faults end a run with the documented error, never hang it (issue 13 item 15).

Faults are injected into the real SQLite store, in the writer thread's commit:
a commit raises what a full disk raises (`sqlite3.OperationalError('database
or disk is full')`, `OSError(ENOSPC)`) or blocks until the store's commit
timeout gives up on it, and only once the batch writes a chosen table (task
logs, variables, events, inbox marks, the execution itself). Runs go through
the service and the real engine with real shell tasks; what was committed
before the fault resumes once the fault is gone. A real lock (another
connection holding SQLite's write lock) shows that nothing runs before its
execution is durable.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from whenflow.domain.errors import StoreError
from whenflow.domain.records import MessageKind
from whenflow.domain.states import ExecutionStatus
from whenflow.dsl.load import load_program_text
from whenflow.services.executions import ExecutionService, Settings
from whenflow.services.pipelines import default_runner
from whenflow.storage import queries
from whenflow.storage.sqlite_writer import SqliteBatchWriter

# Bounds every run in these tests: a hang fails the test instead of freezing it.
NO_HANG_S = 30.0


def talking_pipeline(marker: Path) -> str:
    """`talk` logs lines and writes an output; `after` reads it; every start is marked."""
    return textwrap.dedent(
        f"""\
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {{name: talky, version: 1.0.0}}
        spec:
          nodes:
            - id: talk
              task:
                type: shell
                script: |
                  echo "talk" >> "{marker}"
                  for i in 1 2 3; do echo "line $i"; done
                  echo "value=3" >> "$WF_OUTPUTS"
            - id: after
              task: {{type: noop}}
              inputBindings: {{v: "{{{{ talk.value }}}}"}}
          outputs:
            v: "{{{{ after.v }}}}"
        """
    )


class Fault:
    """Makes the SQLite writer's commits fail once a batch writes `table`."""

    def __init__(self, table: str, error: BaseException | None) -> None:
        self.table = table
        self.error = error  # None: block until released, then fail
        self.armed = True
        self.hit = threading.Event()
        self.unblock = threading.Event()

    def wrap(self, original: Callable[..., None]) -> Callable[..., None]:
        def commit(writer: Any, statements: list[Any], lease: Any) -> None:
            tables = {step.statement.table.name for step, _, _ in statements}
            if self.armed and self.table in tables:
                self.hit.set()
                if self.error is None:
                    self.unblock.wait()
                    raise sqlite3.OperationalError("the blocked commit was abandoned")
                raise self.error
            original(writer, statements, lease)

        return commit


@pytest.fixture
def inject(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[str, BaseException | None], Fault]]:
    faults: list[Fault] = []

    def arm(table: str, error: BaseException | None) -> Fault:
        fault = Fault(table, error)
        monkeypatch.setattr(SqliteBatchWriter, "_commit", fault.wrap(SqliteBatchWriter._commit))
        faults.append(fault)
        return fault

    yield arm
    for fault in faults:
        fault.armed = False
        fault.unblock.set()


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'faults.db'}",
        "artifacts_url": str(tmp_path / "artifacts"),
        "commit_timeout_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


DISK_FULL = sqlite3.OperationalError("database or disk is full")
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ("task_logs", DISK_FULL),  # the task is writing its log when the disk fills
        ("variables", ENOSPC),
        ("events", DISK_FULL),
        ("task_logs", None),  # a commit that never returns
    ],
    ids=["logs-disk-full", "variables-enospc", "events-disk-full", "logs-hanging-commit"],
)
async def test_a_commit_failure_ends_the_run_and_the_committed_prefix_resumes(
    tmp_path: Path,
    inject: Callable[[str, BaseException | None], Fault],
    table: str,
    error: BaseException | None,
) -> None:
    marker = tmp_path / "starts"
    runner = default_runner()
    program = load_program_text(talking_pipeline(marker), runner, path="talky.yaml")
    fault = inject(table, error)
    ids: list[str] = []
    async with asyncio.timeout(NO_HANG_S):
        with pytest.raises(StoreError, match="the state store could not commit") as raised:
            async with ExecutionService.open(settings(tmp_path), runner) as service:
                await service.run(program, {}, on_event=lambda e: ids.append(e.execution_id))
    assert fault.hit.is_set()
    cause = raised.value.__cause__
    if error is None:
        assert isinstance(cause, TimeoutError)
        assert "longer than 0.5s" in str(raised.value)
    else:
        assert type(cause) is type(error) or isinstance(cause.__cause__, type(error))

    # The fault is gone: what was committed resumes; the execution was never lost.
    fault.armed = False
    fault.unblock.set()
    async with asyncio.timeout(NO_HANG_S):
        async with ExecutionService.open(settings(tmp_path, lease_s=0.5), runner) as service:
            before = await service.show(ids[0])
            assert before.status is ExecutionStatus.RUNNING
            result = await _resume_when_free(service, ids[0])
    assert result.status is ExecutionStatus.COMPLETED, result.error
    assert result.outputs == {"v": 3}
    assert list(result.events[: len(before.events)]) == list(before.events)
    assert result.events.count("pipeline.started") == 1
    assert result.events[-1] == "pipeline.completed"
    runner.close()


async def _resume_when_free(service: ExecutionService, execution_id: str) -> Any:
    """Resume; a run whose commit was abandoned could not release its lease: wait it out."""
    from whenflow.domain.errors import ExecutionOwned

    while True:
        try:
            return await service.resume(execution_id)
        except ExecutionOwned:
            await asyncio.sleep(0.05)  # polls the lease until it expires (0.5 s at most)


async def test_a_failed_inbox_mark_ends_the_run(
    tmp_path: Path, inject: Callable[[str, BaseException | None], Fault]
) -> None:
    """Another thing being written: the mark of an applied request (`events send`)."""
    from whenflow.testing import InlineRunner

    text = textwrap.dedent(
        """\
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {name: gated, version: 1.0.0}
        spec:
          nodes:
            - {id: ship, startWhen: "event:external.go", task: {type: noop}}
        """
    )
    runner = InlineRunner()
    program = load_program_text(text, runner, path="gated.yaml")
    fault = inject("inbox", DISK_FULL)

    async def run_and_send() -> None:
        async with ExecutionService.open(settings(tmp_path), runner) as service:
            waiting: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            def listen(event: Any) -> None:
                if event.event_type == "pipeline.started" and not waiting.done():
                    waiting.set_result(event.execution_id)

            running = asyncio.create_task(service.run(program, {}, on_event=listen))
            execution_id = await waiting
            await service.store.flush()
            await service.send(execution_id, MessageKind.EVENT, "go")
            await running

    async with asyncio.timeout(NO_HANG_S):
        with pytest.raises(StoreError, match="could not commit"):
            await run_and_send()
    assert fault.hit.is_set()


async def test_nothing_runs_before_its_execution_is_durable(
    tmp_path: Path, inject: Callable[[str, BaseException | None], Fault]
) -> None:
    marker = tmp_path / "starts"
    runner = default_runner()
    program = load_program_text(talking_pipeline(marker), runner, path="talky.yaml")
    fault = inject("executions", DISK_FULL)
    async with asyncio.timeout(NO_HANG_S):
        with pytest.raises(StoreError, match="could not commit"):
            async with ExecutionService.open(settings(tmp_path), runner) as service:
                await service.run(program, {})
    assert fault.hit.is_set()
    assert not marker.exists()  # the task never started
    fault.armed = False
    async with ExecutionService.open(settings(tmp_path), runner) as service:
        assert await service.list_executions() == []
    runner.close()


async def test_nothing_runs_while_another_connection_holds_the_write_lock(tmp_path: Path) -> None:
    """The input that showed it: "database is locked" while the execution is created."""
    marker = tmp_path / "starts"
    runner = default_runner()
    program = load_program_text(talking_pipeline(marker), runner, path="talky.yaml")
    config = settings(tmp_path)
    async with ExecutionService.open(config, runner):
        pass  # creates the schema
    lock = sqlite3.connect(tmp_path / "faults.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        async with asyncio.timeout(NO_HANG_S):
            with pytest.raises(StoreError, match="could not commit"):
                async with ExecutionService.open(config, runner) as service:
                    await service.run(program, {})
        assert not marker.exists()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    runner.close()


async def test_a_store_that_failed_refuses_resume_with_the_same_error(
    tmp_path: Path, inject: Callable[[str, BaseException | None], Fault]
) -> None:
    """Resume on the still-full disk ends with the error too, instead of hanging again."""
    marker = tmp_path / "starts"
    runner = default_runner()
    program = load_program_text(talking_pipeline(marker), runner, path="talky.yaml")
    fault = inject("task_logs", DISK_FULL)
    ids: list[str] = []
    async with asyncio.timeout(NO_HANG_S):
        with pytest.raises(StoreError):
            async with ExecutionService.open(settings(tmp_path), runner) as service:
                await service.run(program, {}, on_event=lambda e: ids.append(e.execution_id))
        with pytest.raises(StoreError, match="could not commit"):
            async with ExecutionService.open(settings(tmp_path), runner) as service:
                await service.resume(ids[0])
    assert fault.hit.is_set()
    engine_url = settings(tmp_path).database_url
    from whenflow.storage.database import make_engine

    engine = make_engine(engine_url)
    try:
        status = await queries.get_status(engine, ids[0])
    finally:
        await engine.dispose()
    assert status is ExecutionStatus.RUNNING  # resumable once the disk has room
    runner.close()


async def test_a_request_the_database_cannot_take_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`whenflow approve`/`events send`/`executions cancel` while the database is locked
    (or full): one store error that says nothing was sent, not the driver's exception."""
    import time

    from whenflow.domain.records import ExecutionCreated
    from whenflow.storage import database, inbox

    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 100)  # give up on the lock soon
    config = settings(tmp_path)
    runner = default_runner()
    async with ExecutionService.open(config, runner) as service:
        # An unfinished execution nobody runs (its process was killed).
        service.store.append([ExecutionCreated("e-1", "p", "1.0.0", "", None, {}, time.time())])
        await service.store.flush()
    lock = sqlite3.connect(tmp_path / "faults.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        async with asyncio.timeout(NO_HANG_S):
            async with ExecutionService.open(config, runner) as service:
                with pytest.raises(StoreError, match="could not store the request") as raised:
                    await service.send("e-1", MessageKind.CANCEL, "", {"reason": "stop"})
        assert "database is locked" in str(raised.value)
        assert "nothing was sent" in str(raised.value)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    engine = database.make_engine(config.database_url)
    try:
        assert await inbox.pending(engine, "e-1") == []
    finally:
        await engine.dispose()
    runner.close()
