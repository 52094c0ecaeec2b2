"""Scheduler drift: fire time minus slot time over many `every: 1s` schedules (issue 16).

    .venv/bin/python benchmarks/scheduler_drift.py [--schedules 50] [--fires 200]
                                                   [--database-url URL]

One process: a `Scheduler` on the real clock, an `EmbeddedStarter` running
each fired execution (a one-node noop pipeline) on the same loop, the store
on a fresh SQLite file (or the database given). The drift of a fire is the
wall time when its fire and its execution's creation were committed, minus
its slot. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from whenflow.dsl.load import load_program_text
from whenflow.services.executions import ExecutionService
from whenflow.services.scheduled_starts import EmbeddedStarter
from whenflow.services.scheduler import Scheduler, SchedulerPolicy
from whenflow.services.schedules import ScheduleService
from whenflow.storage.artifacts import FsspecArtifactStore
from whenflow.storage.database import make_engine, upgrade
from whenflow.storage.state_store import SqlStateStore
from whenflow.testing import InlineRunner

PIPELINE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: drift-{index}, version: 1.0.0}}
spec:
  schedules: [{{id: tick, every: 1s}}]
  nodes: [{{id: work, task: {{type: noop}}}}]
"""


async def measure(url: str, count: int, fires: int, home: Path) -> list[float]:
    engine = make_engine(url)
    await upgrade(engine)
    runner = InlineRunner({})
    programs = {
        f"drift-{i}": load_program_text(PIPELINE.format(index=i), runner, path=f"d{i}.yaml")
        for i in range(count)
    }
    try:
        async with SqlStateStore(engine) as store:
            service = ExecutionService(store, FsspecArtifactStore(home.as_uri()), runner)
            starter = EmbeddedStarter(service, lambda name, version: programs[name])
            schedules = ScheduleService(engine)
            for program in programs.values():
                await schedules.sync(program.definition)
            scheduler = Scheduler(engine, starter, policy=SchedulerPolicy(idle_s=1.0))
            started = time.time()
            await scheduler.start()
            try:
                while len([f for f in scheduler.fired if f.slot > started]) < fires:
                    await scheduler.wait_ticks(scheduler.ticks + 1)
            finally:
                await scheduler.stop()
                await starter.close()
            return [f.fired_at - f.slot for f in scheduler.fired if f.slot > started][:fires]
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--fires", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        url = args.database_url or f"sqlite+aiosqlite:///{home / 'drift.db'}"
        drifts = sorted(asyncio.run(measure(url, args.schedules, args.fires, home)))
    q = statistics.quantiles(drifts, n=100)
    print(
        f"{len(drifts)} fires of {args.schedules} schedules every 1s: drift "
        f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {drifts[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
