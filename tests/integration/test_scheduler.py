"""The scheduler (services/scheduler.py) on a real store, driven by a manual clock.

Each pass is forced at a chosen time: wait until the scheduler sleeps, set
the clock, wake it, wait for the pass to complete. Executions run for real
(`EmbeddedStarter` over `ExecutionService`); a `hold` task keeps a cycle
running until the test releases it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from manual_clock import ManualClock
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.errors import (
    DefinitionError,
    DefinitionIssue,
    ExecutionOwned,
    ScheduleNotFound,
)
from whenflow.dsl.load import load_program_text
from whenflow.dsl.program import PipelineProgram
from whenflow.services.executions import ExecutionService
from whenflow.services.scheduled_starts import (
    EmbeddedStarter,
    FireRequest,
    create_fired_execution,
)
from whenflow.services.scheduler import Scheduler
from whenflow.storage import queries, schedules, tables
from whenflow.storage.artifacts import FsspecArtifactStore
from whenflow.storage.database import make_engine
from whenflow.storage.leases import LeasePolicy
from whenflow.storage.state_store import SqlStateStore
from whenflow.testing import InlineRunner

# A whole multiple of 2 s (and of a day): `every: 2s` slots fall on T + 2k.
T = dt.datetime(2026, 11, 29, 0, 0, tzinfo=dt.UTC).timestamp()
GATES: dict[int, asyncio.Event] = {}


async def hold(cycle: int) -> dict[str, int]:
    await GATES.setdefault(cycle, asyncio.Event()).wait()
    return {"cycle": cycle}


RUNNER = InlineRunner({"tasks:hold": hold})
PIPELINE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: {name}, version: 1.0.0}}
spec:
  schedules:
    - {{id: tick, {schedule}}}
  nodes:
    - id: work
      task: {{type: {task}, callable: "tasks:hold"}}
      inputBindings: {{cycle: "{{{{ system.cycle }}}}"}}
  outputs:
    logical: "{{{{ system.logicalDate }}}}"
"""


@dataclass
class Harness:
    engine: AsyncEngine
    clock: ManualClock
    scheduler: Scheduler
    starter: EmbeddedStarter
    key: str
    settle: bool = True
    """Let the started executions end before each pass (those of noop tasks end at once)."""

    async def pass_at(self, moment: float, scheduler: Scheduler | None = None) -> None:
        """One complete pass of the scheduler with the clock at `moment`."""
        which = scheduler or self.scheduler
        if self.settle:
            await asyncio.gather(*self.starter.runs.values())
        await self.clock.asleep()
        done = which.ticks
        await self.clock.set(moment)
        which.wake()
        await asyncio.wait_for(which.wait_ticks(done + 1), 30)

    async def slots(self) -> list[float]:
        async with self.engine.connect() as connection:
            fires = await schedules.list_fires(connection, self.key)
        return sorted(f.slot for f in fires)

    async def finish(self, cycle: int) -> None:
        GATES.setdefault(cycle, asyncio.Event()).set()
        eid = next(f.execution_id for f in self.scheduler.fired if f.cycle == cycle)
        await self.starter.runs[eid]


@pytest.fixture(autouse=True)
async def only_this_tests_schedules(engine: AsyncEngine) -> AsyncIterator[None]:
    """A scheduler fires every schedule of its database: on the PostgreSQL database the
    tests share, those of the other tests of this file are deleted before and after."""
    await _delete_schedules(engine)
    yield
    await _delete_schedules(engine)


async def _delete_schedules(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            sa.delete(tables.schedules).where(tables.schedules.c.pipeline_name.like("sch-%"))
        )


@pytest.fixture
async def harness(
    request: pytest.FixtureRequest, store: SqlStateStore, engine: AsyncEngine, tmp_path: Path
) -> AsyncIterator[Harness]:
    GATES.clear()
    spec, task = getattr(request, "param", ("every: 2s", "noop"))
    made = await _make(store, engine, tmp_path, spec, task, T + 0.5)
    try:
        yield made
    finally:
        await made.scheduler.stop()
        for fire in made.scheduler.fired:
            GATES.setdefault(fire.cycle, asyncio.Event()).set()
        await made.starter.close()


async def _make(
    store: SqlStateStore, engine: AsyncEngine, tmp_path: Path, spec: str, task: str, now: float
) -> Harness:
    name = f"sch-{uuid.uuid4().hex[:8]}"
    program = load_program_text(
        PIPELINE.format(name=name, schedule=spec, task=task), RUNNER, path=f"{name}.yaml"
    )
    definition = program.definition
    async with engine.begin() as connection:
        (row,) = await schedules.sync_pipeline(
            connection, name, definition.version, definition.schedules, now
        )
    made = _harness(store, engine, tmp_path, program, row.key, now)
    made.settle = task == "noop"
    return made


def _harness(
    store: SqlStateStore,
    engine: AsyncEngine,
    tmp_path: Path,
    program: PipelineProgram,
    key: str,
    now: float,
) -> Harness:
    service = ExecutionService(store, FsspecArtifactStore(tmp_path.as_uri()), RUNNER)
    starter = EmbeddedStarter(service, lambda name, version: program)
    clock = ManualClock(now)
    return Harness(engine, clock, Scheduler(engine, starter, clock=clock), starter, key)


def schedule(spec: str, task: str = "noop") -> pytest.MarkDecorator:
    """The harness's schedule and task type (default: `every: 2s`, noop)."""
    return pytest.mark.parametrize("harness", [(spec, task)], indirect=True)


async def test_every_2s_fires_once_per_slot(harness: Harness) -> None:
    await harness.scheduler.start()
    await harness.pass_at(T + 2.01)
    await harness.pass_at(T + 2.5)  # the same slot again: nothing new
    await harness.pass_at(T + 4.0)
    await harness.pass_at(T + 5.9)
    await harness.pass_at(T + 6.3)
    assert await harness.slots() == [T + 2, T + 4, T + 6]
    assert [f.cycle for f in harness.scheduler.fired] == [1, 2, 3]
    await harness.starter.close()
    results = [harness.starter.results[f.execution_id] for f in harness.scheduler.fired]
    assert [r.outputs["logical"] for r in results] == [
        "2026-11-29T00:00:02+00:00",
        "2026-11-29T00:00:04+00:00",
        "2026-11-29T00:00:06+00:00",
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # Down from just after slot 2 until 11.5: slots 4..10 were missed (10 is 1.5 s late,
        # more than half a period), then 12 fires on time in every case.
        ("none", [2, 12]),
        ("latest", [2, 10, 12]),
        ("all, maxCatchUp: 3", [2, 6, 8, 10, 12]),
        ("all", [2, 4, 6, 8, 10, 12]),
    ],
)
async def test_catch_up_after_downtime(
    policy: str,
    expected: list[int],
    store: SqlStateStore,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    first = await _make(store, engine, tmp_path, f"every: 2s, catchUp: {policy}", "noop", T)
    await first.scheduler.start()
    await first.pass_at(T + 2.0)
    await first.scheduler.stop()
    await first.starter.close()  # cycle 1 ends: no overlap with what catches up
    # A new process: a new scheduler, ten seconds later.
    second = _harness(store, engine, tmp_path, _program_of(first), first.key, T + 11.5)
    await second.scheduler.start()
    try:
        await second.pass_at(T + 11.5)
        await second.pass_at(T + 12.0)
    finally:
        await second.scheduler.stop()
    assert await first.slots() == [T + s for s in expected]
    await first.starter.close()
    await second.starter.close()


def _program_of(h: Harness) -> PipelineProgram:
    starter = h.starter
    return starter.load("", "")


@schedule("every: 2s, overlap: skip", "python")
async def test_overlap_skip_skips_while_the_previous_cycle_runs(harness: Harness) -> None:
    await harness.scheduler.start()
    await harness.pass_at(T + 2.0)
    await harness.pass_at(T + 4.0)  # cycle 1 still holds: skipped
    assert harness.scheduler.skipped == 1
    await harness.finish(1)
    await harness.pass_at(T + 6.0)
    assert await harness.slots() == [T + 2, T + 6]
    assert [f.cycle for f in harness.scheduler.fired] == [1, 2]
    await harness.finish(2)


@schedule("every: 2s, overlap: queue", "python")
async def test_overlap_queue_waits_for_the_previous_cycle(harness: Harness) -> None:
    await harness.scheduler.start()
    await harness.pass_at(T + 2.0)
    await harness.pass_at(T + 4.0)  # queued behind cycle 1
    assert await harness.slots() == [T + 2]
    await harness.finish(1)
    await harness.pass_at(T + 4.5)
    assert await harness.slots() == [T + 2, T + 4]  # the queued slot, as its own slot
    await harness.finish(2)
    second = harness.starter.results[harness.scheduler.fired[1].execution_id]
    assert second.outputs["logical"] == "2026-11-29T00:00:04+00:00"


@schedule("every: 2s, overlap: cancelPrevious", "python")
async def test_overlap_cancel_previous_cancels_then_fires(harness: Harness) -> None:
    await harness.scheduler.start()
    await harness.pass_at(T + 2.0)
    await harness.pass_at(T + 4.0)
    first, second = harness.scheduler.fired
    cancelled = await harness.starter.runs[first.execution_id]
    assert str(cancelled.status) == "cancelled"
    assert await harness.slots() == [T + 2, T + 4]
    await harness.finish(2)
    status = await queries.get_status(harness.engine, second.execution_id)
    assert str(status) == "completed"


@schedule('cron: "0 7 * * *", timezone: Asia/Shanghai')
async def test_shanghai_cron_fires_at_23_utc_the_day_before(harness: Harness) -> None:
    await harness.scheduler.start()
    await harness.pass_at(T + 22 * 3600)
    await harness.pass_at(T + 23 * 3600 + 0.2)
    await harness.pass_at(T + 47 * 3600 + 0.2)
    assert await harness.slots() == [T + 23 * 3600, T + 47 * 3600]


async def test_pause_and_resume(harness: Harness) -> None:
    await harness.scheduler.start()
    await harness.pass_at(T + 2.0)
    await harness.scheduler.pause(harness.key)
    await harness.pass_at(T + 4.0)
    await harness.pass_at(T + 5.0)
    await harness.scheduler.resume(harness.key)  # at 5.0: slot 4 passed while paused
    await harness.pass_at(T + 5.5)
    await harness.pass_at(T + 6.0)
    assert await harness.slots() == [T + 2, T + 6]


async def test_a_restart_right_after_a_fire_does_not_fire_again(
    harness: Harness, store: SqlStateStore, engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    await harness.scheduler.start()
    await harness.pass_at(T + 2.0)
    await harness.scheduler.stop()
    await harness.starter.close()  # cycle 1 has ended: the next slot is not skipped
    # Another store and scheduler on the same database (a restarted process, or a
    # second server): the same instant, and the next slot raced by both.
    other_engine = make_engine(db_url)
    try:
        async with SqlStateStore(other_engine) as other_store:
            other = _harness(
                other_store, other_engine, tmp_path, _program_of(harness), harness.key, T + 2
            )
            await other.scheduler.start()
            await harness.scheduler.start()
            await other.pass_at(T + 2.1)
            await asyncio.gather(harness.pass_at(T + 4.0), other.pass_at(T + 4.0, other.scheduler))
            await other.scheduler.stop()
            await other.starter.close()
    finally:
        await other_engine.dispose()
    assert await harness.slots() == [T + 2, T + 4]
    fired = harness.scheduler.fired + other.scheduler.fired
    assert sorted(f.cycle for f in fired) == [1, 2]


async def test_on_the_real_clock_every_slot_fires_once_and_on_time(
    store: SqlStateStore, engine: AsyncEngine, tmp_path: Path
) -> None:
    made = await _make(store, engine, tmp_path, "every: 1s, overlap: queue", "noop", time.time())
    scheduler = Scheduler(engine, made.starter)  # the system clock
    await scheduler.start()
    try:
        async with asyncio.timeout(30):
            while len(mine := [f for f in scheduler.fired if f.schedule_key == made.key]) < 3:
                await scheduler.wait_ticks(scheduler.ticks + 1)
    finally:
        await scheduler.stop()
        await made.starter.close()
    slots = [f.slot for f in mine]
    assert [b - a for a, b in itertools.pairwise(slots)] == [1.0] * (len(slots) - 1)
    assert [f.cycle for f in mine] == list(range(1, len(slots) + 1))
    # Each fired after its slot and within its period.
    assert all(0 <= f.fired_at - f.slot < 1.0 for f in mine), mine


async def test_a_slot_whose_pipeline_cannot_start_is_skipped_and_the_loop_goes_on(
    harness: Harness,
) -> None:
    def gone(name: str, version: str) -> PipelineProgram:
        raise DefinitionError(DefinitionIssue(f"{name}@{version} is not in the registry"))

    program = harness.starter.load
    harness.starter.load = gone
    await harness.scheduler.start()
    await harness.pass_at(T + 2.0)
    async with harness.engine.connect() as connection:
        row = await schedules.get_schedule(connection, harness.key)
    assert (await harness.slots(), row.decided_until) == ([], T + 2)
    harness.starter.load = program
    await harness.pass_at(T + 4.0)
    assert await harness.slots() == [T + 4]


async def test_a_crash_right_after_a_fire_neither_fires_again_nor_loses_the_execution(
    harness: Harness, db_url: str, tmp_path: Path
) -> None:
    program = harness.starter.load("", "")
    slot = T + 2
    # The first process commits the fire of slot 2, then dies before running it: its
    # store goes away without releasing the execution (owned until its lease expires).
    dead_engine = make_engine(db_url)
    try:
        async with SqlStateStore(dead_engine, lease=LeasePolicy.of(0.3)) as dead:
            definition = program.definition
            request = FireRequest(
                harness.key, definition.name, definition.version, definition.schedules[0], slot
            )
            fired = await create_fired_execution(dead, program, request)
    finally:
        await dead_engine.dispose()
    assert fired is not None
    # The restarted process: the slot is not fired again...
    await harness.scheduler.start()
    await harness.pass_at(T + 2.2)
    assert harness.scheduler.fired == []
    assert await harness.slots() == [slot]
    # ...and the execution, once its old lease has expired, is resumed and finishes.
    service = harness.starter.service
    async with asyncio.timeout(30):
        while True:
            try:
                result = await service.resume(fired.execution_id)
                break
            except ExecutionOwned:
                await asyncio.sleep(0.05)  # the dead owner's lease runs out in 0.3 s
    assert str(result.status) == "completed"
    assert result.cycle == {
        "schedule": harness.key,
        "cycle": 1,
        "logicalDate": "2026-11-29T00:00:02+00:00",
    }


async def test_a_cycle_started_by_hand_takes_the_next_number_and_now_as_its_date(
    harness: Harness,
) -> None:
    await harness.scheduler.start()
    await harness.pass_at(T + 2.0)
    await harness.clock.set(T + 2.75)
    fired = await harness.scheduler.trigger(harness.key)
    assert fired is not None
    assert fired.cycle == 2
    await harness.pass_at(T + 4.0)  # the schedule goes on: slot 4 is cycle 3
    assert await harness.slots() == [T + 2, T + 2.75, T + 4]
    await harness.starter.close()
    manual = harness.starter.results[fired.execution_id]
    assert manual.cycle == {
        "schedule": harness.key,
        "cycle": 2,
        "logicalDate": "2026-11-29T00:00:02.750000+00:00",
    }
    with pytest.raises(ScheduleNotFound):
        await harness.scheduler.trigger("nope:nope")
