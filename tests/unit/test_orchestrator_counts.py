"""`OrchestratorCounts` reads live executions: running ones, their attempts, their queue."""

from __future__ import annotations

import asyncio

from engine_harness import make

from whenflow.services.server_stats import OrchestratorCounts

SPEC = """
concurrency: 2
nodes:
  - {id: a, task: {type: python, callable: hold}}
  - {id: b, task: {type: python, callable: hold}}
  - {id: c, task: {type: python, callable: hold}}
"""


async def test_counts_follow_a_real_execution() -> None:
    release = asyncio.Event()
    entered: asyncio.Queue[None] = asyncio.Queue()

    async def hold() -> dict[str, bool]:
        entered.put_nowait(None)
        await release.wait()
        return {"held": True}

    orchestrator, _ = make(SPEC, {"hold": hold})
    live = [orchestrator]
    counts = OrchestratorCounts(lambda: live)
    assert (counts.running_executions(), counts.running_attempts()) == (1, 0)
    run = asyncio.create_task(orchestrator.run())
    for _ in range(2):  # concurrency 2: two attempts enter, the third waits its turn
        await asyncio.wait_for(entered.get(), 10)
    assert counts.running_executions() == 1
    assert counts.running_attempts() == 2
    assert counts.queued_attempts() == 1
    release.set()
    result = await asyncio.wait_for(run, 10)
    assert result.status.value == "completed"
    assert (counts.running_executions(), counts.running_attempts(), counts.queued_attempts()) == (
        0,
        0,
        0,
    )
