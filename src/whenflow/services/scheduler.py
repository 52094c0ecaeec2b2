"""The scheduler: fires the due slots of every active schedule (DESIGN.md §12).

One asyncio task (`Scheduler.start()` / `stop()`) loops: read the stored
schedules, decide each one's due slots, start their executions, then sleep
until the next slot of any schedule (or until woken: a pause, a resume, new
schedules, `stop()`). Time comes from an injected `Clock`, executions are
started by an injected `ExecutionStarter` (the server's host; `EmbeddedStarter`
in one process), so tests drive the loop with a manual clock.

For each schedule, the slots due since the last one decided (its latest
fire, its `decided_until`, or its creation) are planned by `plan_due`
(catch-up after downtime, `schedule_slots`); the slots not fired are skipped
for good (`decided_until`). Then overlap, against the previous cycle's
execution when it has not ended:

- `skip`: the planned slots are skipped;
- `queue`: they wait, in order, each until the previous cycle's execution
  has ended (checked every `queue_poll_s`); a queue lives in this process
  only, so after a restart the waiting slots are judged again by catch-up;
- `cancelPrevious`: that execution is cancelled (through its inbox) and
  the slots fire at once.

Slots planned together (a catch-up) fire together, except under `queue`.
Every fire goes through `create_fired_execution`: a slot fires once, even with
several schedulers (processes, servers) on one database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.errors import CycleNotFound, ExecutionNotFound, StoreError, WhenflowError
from whenflow.domain.schedule_slots import DEFAULT_GRACE_S, next_slot, plan_due
from whenflow.domain.schedules import Overlap
from whenflow.services.scheduled_starts import Fired, FireRequest
from whenflow.storage import queries, schedules
from whenflow.storage.schedules import FireRow, ScheduleRow

_log = logging.getLogger("whenflow.scheduler")


class Clock(Protocol):
    """Wall time in Unix seconds, and a way to wait for a moment of it."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.time()))


class ExecutionStarter(Protocol):
    """Starts and cancels the executions of fired slots (the host that runs them)."""

    async def start(self, request: FireRequest) -> Fired | None:
        """Fire the slot and start its execution (`create_fired_execution`, then run it);
        None when the slot had fired already."""
        ...

    async def cancel(self, execution_id: str, reason: str) -> None:
        """Cancel a running execution (a previous cycle under `cancelPrevious`)."""
        ...


@dataclass(frozen=True, slots=True)
class SchedulerPolicy:
    """Tolerances of the loop, in seconds.

    `grace_s`: how late a slot may fire and count as on time (catch-up);
    `queue_poll_s`: how often queued slots look at the previous execution;
    `idle_s`: the longest sleep, so schedules added by another process are seen.
    """

    grace_s: float = DEFAULT_GRACE_S
    queue_poll_s: float = 1.0
    idle_s: float = 30.0
    parallel: int = 8
    """Schedules processed at once in a pass (each holds a database connection)."""


@dataclass(frozen=True, slots=True)
class FireLog:
    """A slot this scheduler fired: when (`fired_at`, by its clock) and as what."""

    schedule_key: str
    slot: float
    cycle: int
    execution_id: str
    fired_at: float


@dataclass
class _Queue:
    slots: list[float] = field(default_factory=list)


class Scheduler:
    """Fires due slots (module docstring); `start()` runs it, `stop()` ends it cleanly."""

    def __init__(
        self,
        engine: AsyncEngine,
        starter: ExecutionStarter,
        *,
        clock: Clock | None = None,
        policy: SchedulerPolicy | None = None,
    ) -> None:
        self._engine = engine
        self._starter = starter
        self.clock: Clock = clock or SystemClock()
        self.policy = policy or SchedulerPolicy()
        self._queues: dict[str, _Queue] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.fired: list[FireLog] = []
        """Every slot this scheduler fired, in order (for inspection and drift figures)."""
        self.skipped = 0
        """How many times slots were skipped by overlap (catch-up skips are not counted)."""
        self.ticks = 0
        """Completed passes over the schedules."""
        self._ticked = asyncio.Condition()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Run the loop in a task; idempotent."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="whenflow-scheduler")

    async def stop(self) -> None:
        """Stop the loop after the pass under way; started executions go on."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    def wake(self) -> None:
        """Look at the schedules now (they changed)."""
        self._wake.set()

    async def wait_ticks(self, count: int) -> None:
        """Wait until `count` passes have completed since the scheduler was made."""
        async with self._ticked:
            await self._ticked.wait_for(lambda: self.ticks >= count)

    async def pause(self, key: str) -> None:
        """Pause a schedule: none of its slots fires until `resume`.

        Raises:
            ScheduleNotFound: no such schedule.
        """
        async with self._engine.begin() as connection:
            await schedules.set_paused(connection, key, True, self.clock.now())
        self._queues.pop(key, None)
        self.wake()

    async def resume(self, key: str) -> None:
        """Resume a schedule; the slots that passed while it was paused do not fire.

        Raises:
            ScheduleNotFound: no such schedule.
        """
        async with self._engine.begin() as connection:
            await schedules.set_paused(connection, key, False, self.clock.now())
        self.wake()

    async def trigger(self, key: str, cycle: int | None = None) -> Fired | None:
        """Start a cycle of a schedule now, by hand: the next cycle number, `logicalDate` now;
        with `cycle`, that past cycle again (its number and `logicalDate`, a new execution).

        Paused or not, overlap aside; the schedule's later slots fire as usual.
        Returns None if a fire at this very instant exists already.

        Raises:
            ScheduleNotFound: no such schedule.
            CycleNotFound: `cycle` has not fired.
            WhenflowError: the pipeline cannot start (its inputs, its version).
        """
        slot = self.clock.now()
        async with self._engine.connect() as connection:
            row = await schedules.get_schedule(connection, key)
            past = None if cycle is None else await schedules.fire_of_cycle(connection, key, cycle)
        if cycle is not None and past is None:
            raise CycleNotFound(key, cycle)
        request = FireRequest(
            row.key,
            row.pipeline_name,
            row.pipeline_version,
            row.schedule,
            slot,
            cycle=cycle,
            logical_date=None if past is None else past.slot,
            by_hand=True,
        )
        fired = await self._starter.start(request)
        if fired is not None:
            self.fired.append(FireLog(key, slot, fired.cycle, fired.execution_id, slot))
        return fired

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                wake_at = await self.tick()
            except Exception:  # a database hiccup: log, try again later, never die
                _log.exception("the scheduler's pass failed; trying again")
                wake_at = self.clock.now() + self.policy.queue_poll_s
            async with self._ticked:
                self.ticks += 1
                self._ticked.notify_all()
            if self._wake.is_set():  # stopped or changed during the pass
                continue
            sleeper = asyncio.create_task(self.clock.sleep_until(wake_at))
            woken = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (sleeper, woken):
                    waiter.cancel()
                await asyncio.gather(sleeper, woken, return_exceptions=True)

    # ---------------------------------------------------------------- a pass

    async def tick(self) -> float:
        """One pass over every active schedule; returns when the next pass is due."""
        now = self.clock.now()
        async with self._engine.connect() as connection:
            rows = await schedules.list_schedules(connection)
            latest = await schedules.latest_slots(connection)
        wake_at = now + self.policy.idle_s
        active = [r for r in rows if not r.paused]
        known = {r.key for r in active}
        for key in [k for k in self._queues if k not in known]:
            del self._queues[key]
        limit = asyncio.Semaphore(self.policy.parallel)

        async def process(row: ScheduleRow) -> float | None:
            async with limit:
                return await self._process(row, latest.get(row.key), now)

        outcomes = await asyncio.gather(*(process(r) for r in active), return_exceptions=True)
        for row, due in zip(active, outcomes, strict=True):
            if isinstance(due, BaseException):
                if not isinstance(due, Exception):
                    raise due
                _log.error("schedule %s: its pass failed: %s", row.key, due, exc_info=due)
                due = now + self.policy.queue_poll_s
            if due is not None:
                wake_at = min(wake_at, due)
        return wake_at

    async def _process(self, row: ScheduleRow, last_slot: float | None, now: float) -> float | None:
        schedule = row.schedule
        queue = self._queues.setdefault(row.key, _Queue()).slots
        marks = [row.created_at, row.decided_until, last_slot]
        after = max(m for m in [*marks, *queue[-1:]] if m is not None)
        plan = plan_due(schedule, after, now, grace_s=self.policy.grace_s)
        if plan.skip_through is not None:
            await self._skip(row.key, plan.skip_through)
        if not plan.fire and not queue:
            return next_slot(schedule, max(now, after))
        async with self._engine.connect() as connection:
            last = await schedules.last_fire(connection, row.key)
        if schedule.overlap is Overlap.QUEUE:
            queue.extend(plan.fire)
            while queue:
                if await self._running(last):
                    return now + self.policy.queue_poll_s
                last = await self._fire(row, queue.pop(0)) or last
        elif plan.fire:
            previous = last if await self._running(last) else None
            if previous is not None and schedule.overlap is Overlap.SKIP:
                _log.info("schedule %s: skipped, cycle %d still runs", row.key, previous.cycle)
                self.skipped += len(plan.fire)
                await self._skip(row.key, plan.fire[-1])
            else:
                if previous is not None and previous.execution_id is not None:
                    await self._cancel(previous.execution_id, row.key)
                for slot in plan.fire:
                    await self._fire(row, slot)
        return next_slot(schedule, max(now, after))

    async def _running(self, fire: FireRow | None) -> bool:
        if fire is None or fire.execution_id is None:
            return False
        try:
            status = await queries.get_status(self._engine, fire.execution_id)
        except ExecutionNotFound:
            return False
        return not status.is_terminal

    async def _skip(self, key: str, slot: float) -> None:
        async with self._engine.begin() as connection:
            await schedules.skip_through(connection, key, slot, self.clock.now())

    async def _cancel(self, execution_id: str, key: str) -> None:
        try:
            await self._starter.cancel(execution_id, f"cancelled by the next cycle of {key}")
        except WhenflowError as exc:  # it ended meanwhile: nothing to cancel
            _log.info("schedule %s: the previous cycle was not cancelled: %s", key, exc)

    async def _fire(self, row: ScheduleRow, slot: float) -> FireRow | None:
        request = FireRequest(row.key, row.pipeline_name, row.pipeline_version, row.schedule, slot)
        try:
            fired = await self._starter.start(request)
        except StoreError:
            raise  # the database: the pass fails and is tried again
        except WhenflowError as exc:  # bad inputs, a pipeline version that cannot load
            _log.error("schedule %s cannot start its pipeline, slot skipped: %s", row.key, exc)
            await self._skip(row.key, slot)
            return None
        if fired is None:  # another scheduler fired it
            async with self._engine.connect() as connection:
                return await schedules.last_fire(connection, row.key)
        at = self.clock.now()
        self.fired.append(FireLog(row.key, slot, fired.cycle, fired.execution_id, at))
        return FireRow(row.key, slot, fired.cycle, fired.execution_id, at)
