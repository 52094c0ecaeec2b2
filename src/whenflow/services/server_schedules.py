"""Schedules in `whenflow server`: the scheduler's starter over the execution host (DESIGN.md §12).

`HostStarter` is the `ExecutionStarter` the server's `Scheduler` fires
slots with: the fire and the execution's creation are one commit
(`create_fired_execution`), then the host runs the execution as one of its
own (`ExecutionHost.adopt`: hosted, streamed, cancellable, the same path that
resumes it after a crash right after the fire). `ServerSchedules` holds the
scheduler and the `ScheduleService` of a server, keeps the stored schedules
in step with the latest published version of each pipeline, and stops a
cycle by cancelling its execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from whenflow.domain.errors import RequestRefused
from whenflow.domain.records import MessageKind
from whenflow.services.execution_host import ExecutionHost
from whenflow.services.program_cache import ProgramCache
from whenflow.services.registry import RegistryService
from whenflow.services.scheduled_starts import Fired, FireRequest, create_fired_execution
from whenflow.services.scheduler import Scheduler
from whenflow.services.schedules import CycleView, ScheduleService
from whenflow.storage.inbox import MessageState

_log = logging.getLogger("whenflow.scheduler")


@dataclass
class HostStarter:
    """Fires slots into the server's host (module docstring).

    The fire is committed before `start` returns; the host takes the execution
    up in a background task, so one slow start does not delay the other
    schedules' fires. `close()` waits for those tasks.
    """

    host: ExecutionHost
    programs: ProgramCache
    _adopting: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, request: FireRequest) -> Fired | None:
        program = await self.programs.get(request.pipeline_name, request.pipeline_version)
        fired = await create_fired_execution(self.host.service.store, program, request)
        if fired is not None:
            task = asyncio.get_running_loop().create_task(
                self._adopt(request.schedule_key, fired),
                name=f"whenflow-cycle:{request.schedule_key}:{fired.cycle}",
            )
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)
        return fired

    async def _adopt(self, key: str, fired: Fired) -> None:
        if not await self.host.adopt(fired.execution_id):
            # Already taken up by the host's own pass over unfinished executions, or
            # the server is closing: then the next server resumes it.
            _log.info(
                "cycle %d of %s: execution %s was not started by the scheduler",
                fired.cycle,
                key,
                fired.execution_id,
            )

    async def close(self) -> None:
        """Wait for the executions being taken up (each is quick: a claim and a read)."""
        await asyncio.gather(*list(self._adopting), return_exceptions=True)

    async def cancel(self, execution_id: str, reason: str) -> None:
        await self.host.request(execution_id, MessageKind.CANCEL, "", {"reason": reason})


class ServerSchedules:
    """The scheduler of one server, started once the host resumed what it owns."""

    def __init__(self, host: ExecutionHost, registry: RegistryService, programs: ProgramCache):
        self._host = host
        self._registry = registry
        engine = host.service.store.engine
        self._starter = HostStarter(host, programs)
        self.scheduler = Scheduler(engine, self._starter)
        self.service = ScheduleService(engine, on_change=self.scheduler.wake)
        self._starting: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ServerSchedules:
        self._starting = asyncio.create_task(self._start(), name="whenflow-scheduler-start")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        await self.scheduler.stop()
        await self._starter.close()

    async def _start(self) -> None:
        await self._host.resumed_once.wait()
        await self.scheduler.start()

    async def published(self, pipeline_name: str) -> None:
        """A version of `pipeline_name` was published: its schedules become those of its
        latest published version (publishing an older version changes nothing)."""
        program = await self._registry.program(pipeline_name)
        await self.service.sync(program.definition)

    async def trigger(self, key: str, cycle: int | None = None) -> Fired | None:
        """Start the schedule's next cycle now, or run cycle `cycle` again
        (`Scheduler.trigger`); raises ScheduleNotFound, CycleNotFound."""
        return await self.scheduler.trigger(key, cycle)

    async def stop_cycle(self, key: str, cycle: int, reason: str) -> tuple[CycleView, MessageState]:
        """Cancel the execution of cycle `cycle` of a schedule (`ExecutionHost.request`);
        returns the cycle and the cancel request's outcome.

        Raises:
            ScheduleNotFound: no such schedule.
            CycleNotFound: it has no such cycle.
            RequestRefused: the cycle's execution was deleted or has ended.
        """
        found = await self.service.cycle(key, cycle)
        if found.execution_id is None:
            raise RequestRefused(f"cycle {cycle} of {key} has no execution any more")
        state = await self._host.request(
            found.execution_id, MessageKind.CANCEL, "", {"reason": reason}
        )
        return found, state
