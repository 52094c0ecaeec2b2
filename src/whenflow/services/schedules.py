"""The use cases of schedules and cycles, for the API and the CLI (DESIGN.md §12).

`ScheduleService` keeps the stored schedules in step with published
pipelines (`sync` on publish), lists them with their next fire times,
pauses and resumes them, and lists a schedule's cycles with the status of
each cycle's execution. `on_change` (the running `Scheduler.wake`) is called
after every change, so the scheduler sees it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.definitions import PipelineDefinition
from whenflow.domain.errors import CycleNotFound, ExecutionNotFound
from whenflow.domain.schedule_slots import iso, upcoming
from whenflow.storage import queries, schedules
from whenflow.storage.schedules import FireRow, ScheduleRow


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A schedule as shown: `id` is `<pipeline>:<schedule id>`; `next` holds the next
    fire times (ISO 8601, in its time zone; empty while paused or once ended)."""

    id: str
    pipeline: str
    version: str
    spec: dict[str, Any]
    paused: bool
    cycles: int
    next: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "version": self.version,
            "spec": self.spec,
            "paused": self.paused,
            "cycles": self.cycles,
            "next": list(self.next),
        }


@dataclass(frozen=True, slots=True)
class CycleView:
    """One cycle: its number, its slot (`logicalDate`, ISO 8601 UTC), its execution."""

    cycle: int
    logical_date: str
    execution_id: str | None
    status: str | None
    fired_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            "logicalDate": self.logical_date,
            "executionId": self.execution_id,
            "status": self.status,
            "firedAt": self.fired_at,
        }


class ScheduleService:
    """Schedules and cycles over the store's engine (module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._on_change = on_change or (lambda: None)
        self._clock = clock

    async def sync(self, definition: PipelineDefinition) -> list[ScheduleView]:
        """Make the stored schedules of `definition.name` those of this (published) version."""
        async with self._engine.begin() as connection:
            rows = await schedules.sync_pipeline(
                connection,
                definition.name,
                definition.version,
                definition.schedules,
                self._clock(),
            )
        self._on_change()
        return [self._view(r) for r in rows]

    async def list_schedules(self, pipeline: str | None = None) -> list[ScheduleView]:
        async with self._engine.connect() as connection:
            rows = await schedules.list_schedules(connection, pipeline)
        return [self._view(r) for r in rows]

    async def get(self, key: str, *, count: int = 5) -> ScheduleView:
        """One schedule with its next `count` fire times; raises ScheduleNotFound."""
        async with self._engine.connect() as connection:
            row = await schedules.get_schedule(connection, key)
        return self._view(row, count)

    async def pause(self, key: str) -> ScheduleView:
        """Pause; raises ScheduleNotFound."""
        return await self._set_paused(key, True)

    async def resume(self, key: str) -> ScheduleView:
        """Resume (the slots passed while paused do not fire); raises ScheduleNotFound."""
        return await self._set_paused(key, False)

    async def _set_paused(self, key: str, paused: bool) -> ScheduleView:
        async with self._engine.begin() as connection:
            await schedules.set_paused(connection, key, paused, self._clock())
            row = await schedules.get_schedule(connection, key)
        self._on_change()
        return self._view(row)

    async def cycles(self, key: str, *, limit: int = 50) -> list[CycleView]:
        """The cycles of a schedule, latest first; raises ScheduleNotFound."""
        async with self._engine.connect() as connection:
            await schedules.get_schedule(connection, key)
            fires = await schedules.list_fires(connection, key, limit=limit)
        return [await self._cycle_view(fire) for fire in fires]

    async def cycle(self, key: str, cycle: int) -> CycleView:
        """One cycle of a schedule.

        Raises:
            ScheduleNotFound: no such schedule.
            CycleNotFound: it has no cycle with that number.
        """
        async with self._engine.connect() as connection:
            await schedules.get_schedule(connection, key)
            fire = await schedules.fire_of_cycle(connection, key, cycle)
        if fire is None:
            raise CycleNotFound(key, cycle)
        return await self._cycle_view(fire)

    async def _cycle_view(self, fire: FireRow) -> CycleView:
        status = None
        if fire.execution_id is not None:
            try:
                status = str(await queries.get_status(self._engine, fire.execution_id))
            except ExecutionNotFound:
                status = None
        return CycleView(
            fire.cycle, iso(fire.slot), fire.execution_id, status, iso(fire.created_at)
        )

    def _view(self, row: ScheduleRow, count: int = 5) -> ScheduleView:
        times = () if row.paused else upcoming(row.schedule, self._clock(), count)
        return ScheduleView(
            row.key,
            row.pipeline_name,
            row.pipeline_version,
            row.schedule.to_json(),
            row.paused,
            row.cycles,
            tuple(t.isoformat() for t in times),
        )
