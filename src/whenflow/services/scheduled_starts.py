"""Start the execution of a schedule's slot: fire and creation in one commit (DESIGN.md §12).

`create_fired_execution` is what a host's start function calls for a slot:
it commits the fire (unique per schedule and slot), the cycle number and the
execution's creation together (`storage.schedules.fire_execution`), with
the execution's `system.cycle`, `system.logicalDate` (the slot, ISO 8601 UTC)
and `system.schedule` as variables, so templates read them and a resumed
execution has them back. The execution is then run by resuming it, the same
path that finishes it after a crash right after the fire.

`EmbeddedStarter` is that start function over an `ExecutionService` in this
process (tests, a one-process deployment); the server's host provides its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from whenflow.domain.param_types import resolve_inputs, type_name
from whenflow.domain.records import ExecutionCreated, MessageKind, Record, VariableWritten
from whenflow.domain.schedule_slots import iso
from whenflow.domain.schedules import SCHEDULE_SYSTEM_NAMES, Schedule
from whenflow.domain.variables import Variable
from whenflow.dsl.program import PipelineProgram
from whenflow.engine.runtime import ExecutionResult
from whenflow.engine.variable_pool import INPUT_SCOPE, SYSTEM_SCOPE
from whenflow.services.executions import ExecutionService
from whenflow.storage.schedules import fire_execution
from whenflow.storage.state_store import SqlStateStore

SYSTEM_SCHEDULE, SYSTEM_CYCLE, SYSTEM_LOGICAL_DATE = SCHEDULE_SYSTEM_NAMES
_log = logging.getLogger("whenflow.scheduler")


@dataclass(frozen=True, slots=True)
class FireRequest:
    """A slot of a schedule to start: which pipeline version, with which inputs."""

    schedule_key: str
    pipeline_name: str
    pipeline_version: str
    schedule: Schedule
    slot: float
    """Unix seconds: the fire's key; `system.logicalDate` of the execution unless
    `logical_date` is given."""
    cycle: int | None = None
    """A past cycle to run again (its number is kept), or None for the next cycle."""
    logical_date: float | None = None
    """The `system.logicalDate` of a rerun: its cycle's slot."""
    by_hand: bool = False
    """Started by hand (`Scheduler.trigger`): it fires even while the schedule is paused."""

    @property
    def inputs(self) -> Mapping[str, Any]:
        return self.schedule.inputs


@dataclass(frozen=True, slots=True)
class Fired:
    """The execution started for a slot, and its cycle number."""

    execution_id: str
    cycle: int


def system_values(request: FireRequest, cycle: int) -> dict[str, Any]:
    """The `system.*` values a fired execution gets besides the engine's own."""
    return {
        SYSTEM_CYCLE: cycle,
        SYSTEM_LOGICAL_DATE: iso(
            request.slot if request.logical_date is None else request.logical_date
        ),
        SYSTEM_SCHEDULE: request.schedule_key,
    }


async def create_fired_execution(
    store: SqlStateStore, program: PipelineProgram, request: FireRequest
) -> Fired | None:
    """Commit the fire of `request.slot` with its execution's creation (module docstring).

    Returns None when the slot had fired already (in this process or another), or,
    unless `request.by_hand`, when the schedule is paused.

    Raises:
        InputError: the schedule's inputs do not match the pipeline's.
        ScheduleNotFound: the schedule was deleted meanwhile.
    """
    definition = program.definition
    inputs = resolve_inputs(definition.inputs, request.inputs)
    execution_id = str(uuid.uuid4())
    now = time.time()

    def creation(cycle: int) -> list[Record]:
        records: list[Record] = [
            ExecutionCreated(
                execution_id=execution_id,
                pipeline_name=definition.name,
                pipeline_version=definition.version,
                definition_text=definition.source_text or "",
                definition_path=definition.source_path,
                inputs=dict(inputs),
                created_at=now,
            )
        ]
        values = [(INPUT_SCOPE, inputs), (SYSTEM_SCOPE, system_values(request, cycle))]
        for scope, named in values:
            records.extend(
                VariableWritten(execution_id, Variable(scope, name, value, type_name(value), now))
                for name, value in named.items()
            )
        return records

    cycle = await fire_execution(
        store.engine,
        request.schedule_key,
        request.slot,
        creation,
        owner=store.owner,
        lease=store.lease,
        now=now,
        cycle=request.cycle,
        if_active=not request.by_hand,
    )
    return None if cycle is None else Fired(execution_id, cycle)


ProgramLoader = Callable[[str, str], PipelineProgram]
"""(pipeline name, version) → its compiled program; raises WhenflowError."""


@dataclass
class EmbeddedStarter:
    """Starts fired executions on this process's loop through an `ExecutionService`.

    `runs` holds the task running each started execution (by id); `results`
    gets each finished one's result. `close()` waits for the runs to end.
    """

    service: ExecutionService
    load: ProgramLoader
    runs: dict[str, asyncio.Task[ExecutionResult]] = field(default_factory=dict)
    results: dict[str, ExecutionResult] = field(default_factory=dict)

    async def start(self, request: FireRequest) -> Fired | None:
        program = self.load(request.pipeline_name, request.pipeline_version)
        fired = await create_fired_execution(self.service.store, program, request)
        if fired is not None:
            task = asyncio.create_task(
                self.service.resume(fired.execution_id), name=f"whenflow-cycle:{fired.cycle}"
            )
            self.runs[fired.execution_id] = task
            task.add_done_callback(functools.partial(self._done, fired.execution_id))
        return fired

    def _done(self, execution_id: str, task: asyncio.Task[ExecutionResult]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            _log.error("scheduled execution %s failed to run: %s", execution_id, error)
            return
        self.results[execution_id] = task.result()

    async def cancel(self, execution_id: str, reason: str) -> None:
        await self.service.send(execution_id, MessageKind.CANCEL, payload={"reason": reason})

    async def close(self) -> None:
        """Wait for every started execution to end."""
        if self.runs:
            await asyncio.gather(*self.runs.values(), return_exceptions=True)
