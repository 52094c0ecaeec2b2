"""What `/ready` and `/stats` report: the database's reachability, loop lag, CPU, memory.

Measured with the standard library only (`os.times`, `/proc/self/statm`,
`resource`): the figures are the process's own, which is all `/stats` needs,
so psutil would add a compiled dependency for nothing.
"""

from __future__ import annotations

import asyncio
import collections
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from whenflow.services.metrics import StatsSource

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from whenflow.engine.orchestrator import Orchestrator

READY_TIMEOUT_S = 2.0
"""How long `/ready` waits for the database before calling it unreachable."""
LAG_INTERVAL_S = 0.25
"""How often the loop-lag monitor wakes; its lag is how late it wakes."""
LAG_WINDOW = 240
"""Samples the monitor keeps (240 × 0.25 s: the last minute) for the maximum."""


class DatabaseProbe:
    """Answers "can the server reach its database now?" with one `SELECT 1`."""

    def __init__(self, engine: AsyncEngine | Callable[[], AsyncEngine]) -> None:
        """`engine`, or a function giving it (a server opens its store after routing)."""
        self._engine = engine

    async def problem(self, timeout_s: float = READY_TIMEOUT_S) -> str | None:
        """None if `SELECT 1` answered within `timeout_s` seconds, else why not (one line)."""
        try:
            async with asyncio.timeout(timeout_s):
                engine = self._engine() if callable(self._engine) else self._engine
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        except TimeoutError:
            return f"the database did not answer within {timeout_s:g} s"
        except Exception as exc:  # any driver's way of failing to connect
            text = str(exc).strip()
            reason = text.splitlines()[0] if text else type(exc).__name__
            return f"cannot reach the database: {reason}"
        return None


class OrchestratorCounts:
    """A `StatsSource` over the executions a server runs: `live()` gives their
    orchestrators (those that ended are not counted, listed or not).

    Read on the loop's thread, like everything of an orchestrator's state.
    """

    def __init__(self, live: Callable[[], Iterable[Orchestrator]]) -> None:
        self._live = live

    def _running(self) -> list[Orchestrator]:
        return [o for o in self._live() if not o.status.is_terminal]

    def running_executions(self) -> int:
        return len(self._running())

    def running_attempts(self) -> int:
        return sum(o.state.running for o in self._running())

    def queued_attempts(self) -> int:
        """Attempts waiting for a concurrency slot (of nodes that have not ended)."""
        return sum(
            1
            for o in self._running()
            for node_id, _ in o.state.ready
            if not o.state.nodes[node_id].state.is_terminal
        )


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """The process's resources: CPU seconds used, CPU percent of one core over the
    monitor's last interval (None before it has one), memory in bytes, threads."""

    cpu_seconds: float
    cpu_percent: float | None
    rss_bytes: int
    max_rss_bytes: int
    threads: int


class LoopLagMonitor:
    """Measures how late the event loop runs a timer, and the process's CPU use.

    Start it on the server's loop (`async with monitor:` or `start`/`stop`);
    every `interval_s` it sleeps and records how much later than asked it
    woke: a loop blocked by a callback shows here first.
    """

    def __init__(self, interval_s: float = LAG_INTERVAL_S, window: int = LAG_WINDOW) -> None:
        self._interval = interval_s
        self._lags: collections.deque[float] = collections.deque(maxlen=window)
        self._cpu_percent: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[float]] = []

    @property
    def last_lag_s(self) -> float | None:
        """The latest lag, in seconds (None before the first sample)."""
        return self._lags[-1] if self._lags else None

    @property
    def max_lag_s(self) -> float | None:
        """The largest lag over the window, in seconds."""
        return max(self._lags) if self._lags else None

    @property
    def cpu_percent(self) -> float | None:
        return self._cpu_percent

    async def next_sample(self) -> float:
        """Wait for the monitor's next sample and return its lag (seconds)."""
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="whenflow-loop-lag"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():  # our caller is being cancelled too
                    raise

    async def __aenter__(self) -> LoopLagMonitor:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        cpu_before, wall_before = _cpu_seconds(), time.monotonic()
        while True:
            asked = loop.time()
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - asked - self._interval)
            self._lags.append(lag)
            cpu, wall = _cpu_seconds(), time.monotonic()
            if wall > wall_before:
                self._cpu_percent = 100.0 * (cpu - cpu_before) / (wall - wall_before)
            cpu_before, wall_before = cpu, wall
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(lag)

    def usage(self) -> ProcessUsage:
        """The process's resources now."""
        return process_usage(self._cpu_percent)


def process_usage(cpu_percent: float | None = None) -> ProcessUsage:
    """CPU seconds, memory and threads of this process, read now."""
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    max_rss_bytes = max_rss if sys.platform == "darwin" else max_rss * 1024
    return ProcessUsage(
        cpu_seconds=_cpu_seconds(),
        cpu_percent=cpu_percent,
        rss_bytes=_rss_bytes() or max_rss_bytes,
        max_rss_bytes=max_rss_bytes,
        threads=threading.active_count(),
    )


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _rss_bytes() -> int | None:
    """Resident memory now, from /proc (Linux); None where there is no /proc."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def server_stats(source: StatsSource, monitor: LoopLagMonitor, started_at: float) -> dict[str, Any]:
    """The `/stats` document (camelCase; seconds and bytes).

    `started_at` is the server's start (Unix seconds).
    """
    usage = monitor.usage()
    return {
        "executions": {"running": source.running_executions()},
        "attempts": {"running": source.running_attempts(), "queued": source.queued_attempts()},
        "loop": {"lagSeconds": monitor.last_lag_s, "maxLagSeconds": monitor.max_lag_s},
        "process": {
            "pid": os.getpid(),
            "cpuSeconds": round(usage.cpu_seconds, 3),
            "cpuPercent": None if usage.cpu_percent is None else round(usage.cpu_percent, 1),
            "rssBytes": usage.rss_bytes,
            "maxRssBytes": usage.max_rss_bytes,
            "threads": usage.threads,
        },
        "uptimeSeconds": round(max(0.0, time.time() - started_at), 3),
    }
