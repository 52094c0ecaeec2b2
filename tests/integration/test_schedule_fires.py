"""Fires of schedules on SQLite and PostgreSQL: one execution per slot, whoever races.

A fire row (unique per schedule and slot) is committed in the transaction that
creates its execution; two stores on one database racing on the same slots
create one execution per slot, and cycle numbers 1..N without a gap or a repeat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.errors import ScheduleNotFound
from whenflow.domain.schedules import Schedule
from whenflow.dsl.load import load_program_text
from whenflow.dsl.program import PipelineProgram
from whenflow.services.executions import ExecutionService
from whenflow.services.scheduled_starts import Fired, FireRequest, create_fired_execution
from whenflow.services.schedules import ScheduleService
from whenflow.storage import queries, schedules, tables
from whenflow.storage.artifacts import FsspecArtifactStore
from whenflow.storage.database import make_engine
from whenflow.storage.state_store import SqlStateStore
from whenflow.testing import InlineRunner

PIPELINE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: {name}, version: 1.0.0}}
spec:
  inputs: {{market: {{type: string, required: true}}}}
  schedules:
    - {{id: tick, every: 1m, inputs: {{market: sh}}}}
  nodes:
    - {{id: load, task: {{type: noop}}}}
  outputs:
    cycle: "{{{{ system.cycle }}}}"
    logical: "{{{{ system.logicalDate }}}}"
    schedule: "{{{{ system.schedule }}}}"
    market: "{{{{ pipeline.input.market }}}}"
"""
SLOT = dt.datetime(2026, 11, 29, 23, 34, tzinfo=dt.UTC).timestamp()


def program(name: str) -> PipelineProgram:
    return load_program_text(PIPELINE.format(name=name), InlineRunner({}), path=f"{name}.yaml")


async def publish(engine: AsyncEngine, prog: PipelineProgram) -> str:
    definition = prog.definition
    async with engine.begin() as connection:
        rows = await schedules.sync_pipeline(
            connection, definition.name, definition.version, definition.schedules, time.time()
        )
    return rows[0].key


def request(prog: PipelineProgram, key: str, slot: float) -> FireRequest:
    d = prog.definition
    return FireRequest(key, d.name, d.version, d.schedules[0], slot)


@pytest.fixture
async def second_store(db_url: str, engine: AsyncEngine) -> AsyncIterator[SqlStateStore]:
    """Another store, on its own engine (its own connections), on the same database."""
    other = make_engine(db_url)
    try:
        async with SqlStateStore(other) as store:
            yield store
    finally:
        await other.dispose()


async def test_racing_stores_fire_each_slot_once(
    store: SqlStateStore, second_store: SqlStateStore, engine: AsyncEngine
) -> None:
    prog = program(f"sch-race-{uuid.uuid4().hex[:8]}")
    key = await publish(engine, prog)
    slots = [SLOT + 60 * i for i in range(12)]
    outcomes: list[Fired | None] = []
    for slot in slots:
        pair = await asyncio.gather(
            create_fired_execution(store, prog, request(prog, key, slot)),
            create_fired_execution(second_store, prog, request(prog, key, slot)),
        )
        assert sum(f is not None for f in pair) == 1, pair
        outcomes.extend(pair)
    fired = [f for f in outcomes if f is not None]
    assert sorted(f.cycle for f in fired) == list(range(1, 13))
    async with engine.connect() as connection:
        count = await connection.scalar(
            sa.select(sa.func.count())
            .select_from(tables.executions)
            .where(tables.executions.c.pipeline_name == prog.definition.name)
        )
        rows = await schedules.list_fires(connection, key)
        stored = await schedules.get_schedule(connection, key)
    assert count == 12
    assert sorted(r.slot for r in rows) == slots
    assert {r.execution_id for r in rows} == {f.execution_id for f in fired}
    assert stored.cycles == 12
    # The same slot again, later (a restart): nothing new.
    assert await create_fired_execution(store, prog, request(prog, key, slots[3])) is None


async def test_a_fired_execution_runs_with_its_cycle_and_logical_date(
    store: SqlStateStore, engine: AsyncEngine, tmp_path: Path
) -> None:
    prog = program(f"sch-cycle-{uuid.uuid4().hex[:8]}")
    key = await publish(engine, prog)
    service = ExecutionService(store, FsspecArtifactStore(tmp_path.as_uri()), InlineRunner({}))
    first = await create_fired_execution(store, prog, request(prog, key, SLOT))
    second = await create_fired_execution(store, prog, request(prog, key, SLOT + 60))
    assert first is not None
    assert second is not None
    assert (first.cycle, second.cycle) == (1, 2)
    # The fire's commit made the execution durable and owned: it runs by resuming.
    result = await service.resume(second.execution_id)
    assert str(result.status) == "completed"
    assert result.outputs == {
        "cycle": 2,
        "logical": "2026-11-29T23:35:00+00:00",
        "schedule": key,
        "market": "sh",
    }
    # The execution object names its cycle, live and as stored; others have no `cycle`.
    cycle = {"schedule": key, "cycle": 2, "logicalDate": "2026-11-29T23:35:00+00:00"}
    assert result.to_json()["cycle"] == cycle
    assert (await service.show(second.execution_id)).to_json()["cycle"] == cycle
    plain = await service.run(prog, {"market": "hk"})
    assert "cycle" not in plain.to_json()
    assert "cycle" not in (await service.show(plain.execution_id)).to_json()
    async with engine.connect() as connection:
        fire = await schedules.fire_of_execution(connection, second.execution_id)
    assert fire is not None
    assert (fire.cycle, fire.slot) == (2, SLOT + 60)
    variables = await queries.get_variables(engine, first.execution_id)
    system = {v.name: v.value for v in variables if v.scope == "system"}
    assert system == {"cycle": 1, "logicalDate": "2026-11-29T23:34:00+00:00", "schedule": key}


async def test_sync_pause_resume_and_removal(engine: AsyncEngine, store: SqlStateStore) -> None:
    prog = program(f"sch-sync-{uuid.uuid4().hex[:8]}")
    key = await publish(engine, prog)
    name = prog.definition.name
    assert await create_fired_execution(store, prog, request(prog, key, SLOT)) is not None
    async with engine.begin() as connection:
        await schedules.set_paused(connection, key, True, 100.0)
        assert (await schedules.get_schedule(connection, key)).paused
        await schedules.set_paused(connection, key, False, SLOT + 600)
        resumed = await schedules.get_schedule(connection, key)
        # Resuming decides the slots that passed while paused.
        assert (resumed.paused, resumed.decided_until) == (False, SLOT + 600)
        await schedules.skip_through(connection, key, SLOT + 60, SLOT)  # never moves back
        assert (await schedules.get_schedule(connection, key)).decided_until == SLOT + 600
        # A new version keeps the schedule (and its cycles) when its id stays.
        kept = Schedule(id="tick", every_s=120.0)
        rows = await schedules.sync_pipeline(connection, name, "1.1.0", [kept], SLOT)
        assert [(r.pipeline_version, r.schedule, r.cycles) for r in rows] == [("1.1.0", kept, 1)]
        assert len(await schedules.list_fires(connection, key)) == 1
        # A version without it deletes it with its fires.
        assert await schedules.sync_pipeline(connection, name, "1.2.0", [], SLOT) == []
        assert await schedules.list_fires(connection, key) == []
        with pytest.raises(ScheduleNotFound, match="no schedule"):
            await schedules.set_paused(connection, key, True, SLOT)


async def test_the_schedule_service_lists_schedules_and_cycles(
    store: SqlStateStore, engine: AsyncEngine, tmp_path: Path
) -> None:
    prog = program(f"sch-svc-{uuid.uuid4().hex[:8]}")
    changes: list[str] = []
    service = ScheduleService(
        engine, on_change=lambda: changes.append("changed"), clock=lambda: SLOT
    )
    (view,) = await service.sync(prog.definition)
    assert view.id == f"{prog.definition.name}:tick"
    assert view.next[:2] == ("2026-11-29T23:35:00+00:00", "2026-11-29T23:36:00+00:00")
    runs = ExecutionService(store, FsspecArtifactStore(tmp_path.as_uri()), InlineRunner({}))
    fired = await create_fired_execution(store, prog, request(prog, view.id, SLOT))
    assert fired is not None
    await runs.resume(fired.execution_id)
    assert await create_fired_execution(store, prog, request(prog, view.id, SLOT + 60))
    cycles = await service.cycles(view.id)
    assert [(c.cycle, c.logical_date, c.status) for c in cycles] == [
        (2, "2026-11-29T23:35:00+00:00", "running"),
        (1, "2026-11-29T23:34:00+00:00", "completed"),
    ]
    paused = await service.pause(view.id)
    assert (paused.paused, paused.next, paused.cycles) == (True, (), 2)
    assert (await service.resume(view.id)).next[0] == "2026-11-29T23:35:00+00:00"
    assert [v.id for v in await service.list_schedules(prog.definition.name)] == [view.id]
    assert changes == ["changed"] * 3
    with pytest.raises(ScheduleNotFound):
        await service.get(f"{prog.definition.name}:nope")


async def test_a_paused_schedule_fires_nothing_but_by_hand_and_reruns_keep_their_number(
    store: SqlStateStore, engine: AsyncEngine
) -> None:
    prog = program(f"sch-paused-{uuid.uuid4().hex[:8]}")
    key = await publish(engine, prog)
    first = await create_fired_execution(store, prog, request(prog, key, SLOT))
    assert first is not None
    async with engine.begin() as connection:
        await schedules.set_paused(connection, key, True, time.time())
    assert await create_fired_execution(store, prog, request(prog, key, SLOT + 60)) is None
    by_hand = dataclasses.replace(request(prog, key, SLOT + 61), by_hand=True)
    manual = await create_fired_execution(store, prog, by_hand)
    assert manual is not None
    assert manual.cycle == 2
    rerun = dataclasses.replace(by_hand, slot=SLOT + 62, cycle=1, logical_date=SLOT)
    again = await create_fired_execution(store, prog, rerun)
    assert again is not None
    assert again.cycle == 1
    async with engine.connect() as connection:
        fires = await schedules.list_fires(connection, key)
        latest_one = await schedules.fire_of_cycle(connection, key, 1)
        row = await schedules.get_schedule(connection, key)
    assert [(f.slot, f.cycle) for f in fires] == [(SLOT + 61, 2), (SLOT + 62, 1), (SLOT, 1)]
    assert latest_one is not None
    assert latest_one.execution_id == again.execution_id
    assert row.cycles == 2
    system = {
        v.name: v.value
        for v in await queries.get_variables(engine, again.execution_id)
        if v.scope == "system"
    }
    assert system["cycle"] == 1
    assert system["logicalDate"] == dt.datetime.fromtimestamp(SLOT, dt.UTC).isoformat()
