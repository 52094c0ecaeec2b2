"""Helpers of the deadline and finally tests: blocking tasks, crashes and resumes."""

from __future__ import annotations

import asyncio
from typing import Any

from engine_harness import check_log_invariants, make, program

from whenflow.domain.records import EventAppended
from whenflow.engine.orchestrator import Orchestrator
from whenflow.testing import InlineRunner, InMemoryArtifactStore, InMemoryStateStore


async def forever(**_: Any) -> dict[str, Any]:
    await asyncio.Event().wait()
    return {}


def until(orch: Orchestrator, event_type: str) -> asyncio.Future[None]:
    seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def listener(event: Any) -> None:
        if event.event_type == event_type and not seen.done():
            seen.set_result(None)

    orch.add_listener(listener)
    return seen


def cut_after(store: InMemoryStateStore, event_type: str) -> int:
    """The first unit boundary after `event_type` was recorded: a durable crash point."""
    at = next(
        i
        for i, r in enumerate(store.records)
        if isinstance(r, EventAppended) and r.event.event_type == event_type
    )
    return min(b for b in store.boundaries if b > at)


async def crashed_while(
    spec: str, event_type: str, fns: dict[str, Any], clock: float = 1000.0
) -> tuple[str, InMemoryStateStore]:
    """Run until `event_type`, then keep only the durable prefix a crash would leave."""
    orch, store = make(spec, fns, clock=lambda: clock, inbox_poll_s=None)
    seen = until(orch, event_type)
    await orch.start()
    await seen
    orch.cancel("simulated crash")
    await orch.wait()
    crashed = InMemoryStateStore()
    crashed.records = store.records[: cut_after(store, event_type)]
    return orch.execution_id, crashed


async def resume(
    spec: str, execution_id: str, store: InMemoryStateStore, fns: dict[str, Any], now: float
) -> tuple[Any, InlineRunner]:
    runner = InlineRunner(fns)
    again = Orchestrator(
        program(spec, fns),
        store=store,
        runner=runner,
        artifacts=InMemoryArtifactStore(),
        execution_id=execution_id,
        clock=lambda: now,
        inbox_poll_s=None,
    )
    result = await again.resume(await store.load_execution(execution_id))
    check_log_invariants(store)
    return result, runner
