"""A cycle started by hand in this process, without a server (`whenflow schedules trigger`).

The fire and the execution's creation are one commit as in the server
(`create_fired_execution`); the execution then runs here to its end, like
`whenflow run`. A server running on the same database sees the new cycle in
its list, and would resume the execution if this process died.
"""

from __future__ import annotations

from dataclasses import dataclass

from whenflow.engine.runtime import ExecutionResult
from whenflow.services.executions import ExecutionService
from whenflow.services.pipelines import default_runner
from whenflow.services.registry import RegistryService
from whenflow.services.scheduled_starts import EmbeddedStarter, Fired
from whenflow.services.scheduler import Scheduler
from whenflow.services.schedules import ScheduleService
from whenflow.services.settings import Settings


@dataclass(frozen=True, slots=True)
class CycleRun:
    """The cycle started and its execution's result (None if it could not run here)."""

    fired: Fired
    result: ExecutionResult | None


async def run_cycle_here(
    key: str, cycle: int | None = None, settings: Settings | None = None
) -> CycleRun | None:
    """Start the next cycle of schedule `key` now (or run cycle `cycle` again) and run its
    execution in this process to its end. None if a fire at this instant existed.

    Raises:
        ScheduleNotFound: no such schedule.
        CycleNotFound: `cycle` has not fired.
        NotInRegistry, DefinitionErrors, InputError: the pipeline cannot start.
    """
    runner = default_runner()
    try:
        async with ExecutionService.open(settings, runner=runner) as service:
            engine = service.store.engine
            view = await ScheduleService(engine).get(key, count=0)
            program = await RegistryService(engine, runner).program(view.pipeline, view.version)
            starter = EmbeddedStarter(service, lambda name, version: program)
            fired = await Scheduler(engine, starter).trigger(key, cycle)
            await starter.close()
            if fired is None:
                return None
            return CycleRun(fired, starter.results.get(fired.execution_id))
    finally:
        runner.close()
