"""Schedules of published pipelines and their fires (cycles), on SQLite and PostgreSQL.

The caller owns the transaction: every function takes an `AsyncConnection`
(`async with engine.begin() as connection:`), except `fire_execution`, which
is one whole transaction by design:

    INSERT the fire (schedule, slot)  ON CONFLICT DO NOTHING  -- nothing: already fired
    UPDATE schedules SET cycles = cycles + 1                  -- the cycle number
    INSERT the execution, its input and system variables, its owner row
    UPDATE the fire SET cycle, execution_id

The unique (schedule, slot) key makes the first statement the arbiter: of two
schedulers racing on one slot (two processes, two servers on one PostgreSQL
database) one inserts and the other inserts nothing, after waiting for the
first's commit on PostgreSQL; SQLite serialises the writers. The schedule
row's update serialises the cycle numbers of one schedule. A crash before the
commit leaves nothing; after it, the execution exists and its owner resumes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from whenflow.domain.errors import ScheduleNotFound, StoreError
from whenflow.domain.records import ExecutionCreated, Record
from whenflow.domain.schedules import Schedule
from whenflow.storage import tables
from whenflow.storage.leases import LeasePolicy, Owner, insert_statement
from whenflow.storage.write_batch import BatchStatements, encode_json, plan_batch

_s = tables.schedules
_f = tables.schedule_fires


def schedule_key(pipeline_name: str, schedule_id: str) -> str:
    """The stored id of a pipeline's schedule: `<pipeline>:<schedule id>`."""
    return f"{pipeline_name}:{schedule_id}"


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A stored schedule: its spec, whether it is paused, its last cycle number.

    `decided_until`: the latest slot skipped (catch-up, overlap); times are Unix seconds.
    """

    key: str
    pipeline_name: str
    pipeline_version: str
    schedule: Schedule
    paused: bool
    cycles: int
    decided_until: float | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class FireRow:
    """One fired slot: cycle `cycle` of its schedule, run as `execution_id`.

    `execution_id` is None once that execution was deleted.
    """

    schedule_key: str
    slot: float
    cycle: int
    execution_id: str | None
    created_at: float


def _schedule_row(row: sa.Row[tuple[object, ...]]) -> ScheduleRow:
    m = row._mapping
    return ScheduleRow(
        key=m["id"],
        pipeline_name=m["pipeline_name"],
        pipeline_version=m["pipeline_version"],
        schedule=Schedule.from_json(json.loads(m["spec"])),
        paused=bool(m["paused"]),
        cycles=m["cycles"],
        decided_until=m["decided_until"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _fire_row(row: sa.Row[tuple[object, ...]]) -> FireRow:
    m = row._mapping
    return FireRow(m["schedule_id"], m["slot"], m["cycle"], m["execution_id"], m["created_at"])


async def sync_pipeline(
    connection: AsyncConnection,
    pipeline_name: str,
    pipeline_version: str,
    schedules: Sequence[Schedule],
    now: float,
) -> list[ScheduleRow]:
    """Make the stored schedules of a pipeline those of its version just published.

    A schedule whose id is kept gets the new spec and version and keeps its
    paused flag, cycle count and fires; a new id is added (active); an id no
    longer declared is deleted with its fires. Returns the pipeline's schedules.
    """
    existing = {r.schedule.id: r for r in await list_schedules(connection, pipeline_name)}
    declared = {s.id for s in schedules}
    gone = [r.key for sid, r in existing.items() if sid not in declared]
    if gone:
        await connection.execute(sa.delete(_s).where(_s.c.id.in_(gone)))
    for schedule in schedules:
        spec = encode_json(schedule.to_json())
        if schedule.id in existing:
            await connection.execute(
                sa.update(_s)
                .where(_s.c.id == existing[schedule.id].key)
                .values(spec=spec, pipeline_version=pipeline_version, updated_at=now)
            )
        else:
            await connection.execute(
                sa.insert(_s).values(
                    id=schedule_key(pipeline_name, schedule.id),
                    pipeline_name=pipeline_name,
                    pipeline_version=pipeline_version,
                    schedule_id=schedule.id,
                    spec=spec,
                    paused=False,
                    cycles=0,
                    decided_until=None,
                    created_at=now,
                    updated_at=now,
                )
            )
    return await list_schedules(connection, pipeline_name)


async def list_schedules(
    connection: AsyncConnection, pipeline_name: str | None = None
) -> list[ScheduleRow]:
    """Every stored schedule (of one pipeline when named), by pipeline then id."""
    query = sa.select(_s).order_by(_s.c.pipeline_name, _s.c.schedule_id)
    if pipeline_name is not None:
        query = query.where(_s.c.pipeline_name == pipeline_name)
    return [_schedule_row(r) for r in await connection.execute(query)]


async def get_schedule(connection: AsyncConnection, key: str) -> ScheduleRow:
    """One schedule; raises ScheduleNotFound."""
    row = (await connection.execute(sa.select(_s).where(_s.c.id == key))).first()
    if row is None:
        raise ScheduleNotFound(key)
    return _schedule_row(row)


async def set_paused(connection: AsyncConnection, key: str, paused: bool, now: float) -> None:
    """Pause or resume a schedule; raises ScheduleNotFound.

    Resuming does not fire the slots that passed while it was paused: they
    are decided (skipped) up to `now`, and the next slot after it fires.
    """
    values: dict[str, object] = {"paused": paused, "updated_at": now}
    if not paused:
        values["decided_until"] = sa.case(
            (_s.c.decided_until > now, _s.c.decided_until), else_=sa.literal(now)
        )
    result = await connection.execute(sa.update(_s).where(_s.c.id == key).values(**values))
    if result.rowcount == 0:
        raise ScheduleNotFound(key)


async def skip_through(connection: AsyncConnection, key: str, slot: float, now: float) -> None:
    """Mark every slot up to `slot` decided (skipped unless fired); never moves back."""
    await connection.execute(
        sa.update(_s)
        .where(_s.c.id == key, sa.or_(_s.c.decided_until.is_(None), _s.c.decided_until < slot))
        .values(decided_until=slot, updated_at=now)
    )


async def last_fire(connection: AsyncConnection, key: str) -> FireRow | None:
    """The fire of the latest slot of a schedule, or None before its first."""
    query = sa.select(_f).where(_f.c.schedule_id == key).order_by(_f.c.slot.desc()).limit(1)
    row = (await connection.execute(query)).first()
    return None if row is None else _fire_row(row)


async def latest_slots(connection: AsyncConnection) -> dict[str, float]:
    """The latest fired slot of every schedule that has fired, by schedule key."""
    query = sa.select(_f.c.schedule_id, sa.func.max(_f.c.slot)).group_by(_f.c.schedule_id)
    return {key: slot for key, slot in await connection.execute(query)}


async def list_fires(connection: AsyncConnection, key: str, *, limit: int = 50) -> list[FireRow]:
    """The cycles of a schedule, latest first."""
    query = (
        sa.select(_f)
        .where(_f.c.schedule_id == key)
        .order_by(_f.c.cycle.desc(), _f.c.slot.desc())
        .limit(limit)
    )
    return [_fire_row(r) for r in await connection.execute(query)]


async def fire_of_cycle(connection: AsyncConnection, key: str, cycle: int) -> FireRow | None:
    """The latest fire of cycle `cycle` of a schedule (a rerun's, if any), or None."""
    query = (
        sa.select(_f)
        .where(_f.c.schedule_id == key, _f.c.cycle == cycle)
        .order_by(_f.c.slot.desc())
        .limit(1)
    )
    row = (await connection.execute(query)).first()
    return None if row is None else _fire_row(row)


async def fire_of_execution(connection: AsyncConnection, execution_id: str) -> FireRow | None:
    """The fire that started an execution, if a schedule started it."""
    row = (await connection.execute(sa.select(_f).where(_f.c.execution_id == execution_id))).first()
    return None if row is None else _fire_row(row)


_STATEMENTS: dict[str, BatchStatements] = {}


def _batch_statements(dialect: str) -> BatchStatements:
    statements = _STATEMENTS.get(dialect)
    if statements is None:
        statements = _STATEMENTS[dialect] = BatchStatements(dialect)
    return statements


def _insert_fire_once(dialect: str) -> sa.Executable:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(_f).on_conflict_do_nothing(index_elements=["schedule_id", "slot"])
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(_f).on_conflict_do_nothing(index_elements=["schedule_id", "slot"])
    raise StoreError(f"unsupported database {dialect!r}; use SQLite or PostgreSQL")


async def fire_execution(
    engine: AsyncEngine,
    key: str,
    slot: float,
    creation: Callable[[int], Sequence[Record]],
    *,
    owner: Owner,
    lease: LeasePolicy,
    now: float | None = None,
    cycle: int | None = None,
    if_active: bool = False,
) -> int | None:
    """Record the fire of `slot` and create its execution, in one transaction.

    `creation(cycle)` gives the execution's `ExecutionCreated` and its
    `VariableWritten` records (inputs, `system.*`), as an execution's first
    commit would, once the cycle number is known; the execution is owned by
    `owner` from that commit on (resume it to run it).

    Returns the cycle number, or None when the slot had already fired (then
    nothing is written). With `cycle`, the fire runs that cycle again (a rerun
    by hand): the schedule's cycle count does not move. With `if_active` (the
    scheduler's own fires), nothing is written and None is returned while the
    schedule is paused: a pause that has committed stops every later fire.

    Raises:
        ScheduleNotFound: the schedule is not stored (it was deleted meanwhile).
        ValueError: `creation` holds no ExecutionCreated.
    """
    try:
        return await _fire_execution(
            engine, key, slot, creation, owner, lease, now, cycle, if_active
        )
    except _Paused:
        return None


class _Paused(Exception):
    """The schedule was paused before the fire: its transaction is rolled back."""


async def _fire_execution(
    engine: AsyncEngine,
    key: str,
    slot: float,
    creation: Callable[[int], Sequence[Record]],
    owner: Owner,
    lease: LeasePolicy,
    now: float | None,
    cycle: int | None,
    if_active: bool,
) -> int | None:
    at = time.time() if now is None else now
    dialect = engine.dialect.name
    async with engine.begin() as connection:
        inserted = await connection.execute(
            _insert_fire_once(dialect),
            {"schedule_id": key, "slot": slot, "cycle": 0, "execution_id": None, "created_at": at},
        )
        if inserted.rowcount != 1:
            return None
        active = [_s.c.paused.is_(False)] if if_active else []
        if cycle is None:
            raised = (
                await connection.execute(
                    sa.update(_s)
                    .where(_s.c.id == key, *active)
                    .values(cycles=_s.c.cycles + 1)
                    .returning(_s.c.cycles)
                )
            ).scalar()
        else:
            raised = (
                await connection.execute(sa.select(_s.c.id).where(_s.c.id == key, *active))
            ).scalar()
        if raised is None:
            found = await connection.execute(sa.select(_s.c.id).where(_s.c.id == key))
            if found.first() is not None:
                raise _Paused(key)
            raise ScheduleNotFound(key)
        cycle = int(raised) if cycle is None else cycle
        records = creation(cycle)
        created = next((r for r in records if isinstance(r, ExecutionCreated)), None)
        if created is None:
            raise ValueError("fire_execution needs the execution's ExecutionCreated record")
        for step in plan_batch(records, _batch_statements(dialect)):
            await connection.execute(step.statement, step.mappings())
        await connection.execute(
            insert_statement(),
            {
                "execution_id": created.execution_id,
                "owner_id": owner.owner_id,
                "host": owner.host,
                "pid": owner.pid,
                "acquired_at": at,
                "heartbeat_at": at,
                "expires_at": at + lease.lease_s,
            },
        )
        await connection.execute(
            sa.update(_f)
            .where(_f.c.schedule_id == key, _f.c.slot == slot)
            .values(cycle=cycle, execution_id=created.execution_id)
        )
    return cycle
