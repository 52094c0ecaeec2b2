"""DESIGN.md §7 — a crash at any durable point, then resume: nothing lost, nothing run twice.

The in-memory store marks where each unit of work ends; the real store commits
whole units, so every such boundary is a state a crash can leave behind.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from engine_harness import check_log_invariants, program

from whenflow.domain.records import AttemptRecorded, EventAppended, ExecutionSnapshot
from whenflow.engine.orchestrator import Orchestrator
from whenflow.engine.runtime import ExecutionResult
from whenflow.testing import InlineRunner, InMemoryArtifactStore, InMemoryStateStore

SPEC = """
inputs: {n: {type: integer}}
nodes:
  - {id: extract, task: {type: python, callable: extract}, inputBindings: {n: "{{ pipeline.input.n }}"}}
  - id: transform
    startWhen: "event:extract.completed && {{ extract.rows > 0 }}"
    task: {type: python, callable: transform}
    inputBindings: {rows: "{{ extract.rows }}"}
  - {id: notify_empty, startWhen: "event:extract.completed && {{ extract.rows == 0 }}", task: {type: noop}}
  - id: fan
    forEach: "{{ extract.items }}"
    maxParallel: 2
    task: {type: python, callable: square}
    inputBindings: {x: "{{ item }}"}
  - id: join
    startWhen: "{{ settled(transform, notify_empty) and any_ok(transform, notify_empty) }}"
    task: {type: noop}
  - {id: flaky, task: {type: python, callable: flaky}, retry: {maxAttempts: 3, delay: 0s}}
outputs:
  quality: "{{ transform.quality }}"
  squares: "{{ fan.results | map(attribute='y') | list }}"
"""


def functions() -> dict[str, Any]:
    def flaky(ctx: Any) -> dict[str, Any]:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return {"ok": True}

    return {
        "extract": lambda n: {"rows": n, "items": list(range(n))},
        "transform": lambda rows: {"quality": rows * 2},
        "square": lambda x: {"y": x * x},
        "flaky": flaky,
    }


@dataclass
class Crash:
    """An execution resumed from the durable state a crash after `cut` records leaves."""

    store: InMemoryStateStore
    snapshot: ExecutionSnapshot
    runner: InlineRunner

    async def resume(self, spec: str, fns: dict[str, Any]) -> ExecutionResult:
        again = Orchestrator(
            program(spec, fns),
            store=self.store,
            runner=self.runner,
            artifacts=InMemoryArtifactStore(),
            inputs=self.snapshot.inputs,
            execution_id=self.snapshot.execution_id,
        )
        return await again.resume(self.snapshot)


async def crash(
    store: InMemoryStateStore, execution_id: str, cut: int, fns: dict[str, Any]
) -> Crash:
    crashed = InMemoryStateStore()
    crashed.records = list(store.records[:cut])
    return Crash(crashed, await crashed.load_execution(execution_id), InlineRunner(fns))


def types_upto(store: InMemoryStateStore, cut: int) -> list[str]:
    return [r.event.event_type for r in store.records[:cut] if isinstance(r, EventAppended)]


async def full_run() -> tuple[Orchestrator, InMemoryStateStore, Any]:
    store = InMemoryStateStore()
    orch = Orchestrator(
        program(SPEC, functions()),
        store=store,
        runner=InlineRunner(functions()),
        artifacts=InMemoryArtifactStore(),
        inputs={"n": 3},
    )
    return orch, store, await orch.run()


def test_resume_from_every_durable_boundary() -> None:
    async def scenario() -> int:
        orch, store, reference = await full_run()
        resumed = 0
        for cut in store.boundaries:
            c = await crash(store, orch.execution_id, cut, functions())
            crashed, snapshot, runner = c.store, c.snapshot, c.runner
            if snapshot.status.is_terminal:
                continue
            result = await c.resume(SPEC, functions())
            resumed += 1
            check_log_invariants(crashed)
            assert result.status.value == "completed", cut
            assert result.outputs == reference.outputs, cut
            done_before = {e.source for e in snapshot.events if e.name == "completed"}
            assert not [c.node_id for c in runner.calls if c.node_id in done_before], cut
            items_before = {
                e.payload["index"] for e in snapshot.events if e.event_type == "fan.item_completed"
            }
            rerun_items = {c.item_index for c in runner.calls if c.node_id == "fan"}
            assert not items_before & rerun_items, cut
            if snapshot.events:
                assert "pipeline.resumed" in crashed.event_types()
            else:  # durable since its creation, crashed before it started: it starts now
                assert crashed.event_types()[0] == "pipeline.started"
                assert "pipeline.resumed" not in crashed.event_types()
        return resumed

    assert asyncio.run(scenario()) > 5


def test_a_node_running_at_the_crash_gets_a_new_attempt_with_the_same_key() -> None:
    async def scenario() -> None:
        orch, store, _ = await full_run()
        cut = next(
            b
            for b in store.boundaries
            if "transform.started" in types_upto(store, b)
            and "transform.completed" not in types_upto(store, b)
        )
        c = await crash(store, orch.execution_id, cut, functions())
        crashed, runner = c.store, c.runner
        result = await c.resume(SPEC, functions())
        transform_calls = [c for c in runner.calls if c.node_id == "transform"]
        assert [c.attempt for c in transform_calls] == [2]
        assert transform_calls[0].idempotency_key == f"{orch.execution_id}/transform"
        assert result.nodes["transform"].attempts == 2
        lost = [
            r
            for r in crashed.records
            if isinstance(r, AttemptRecorded) and r.error_type == "AttemptLost"
        ]
        assert [r.attempt for r in lost if r.node_id == "transform"] == [1]

    asyncio.run(scenario())


def test_resume_keeps_for_each_items_that_already_failed_for_good() -> None:
    spec = """
    nodes:
      - id: fan
        forEach: "{{ [0, 1, 2, 3] }}"
        maxParallel: 1
        onItemError: continue
        task: {type: python, callable: odd_fails}
        inputBindings: {x: "{{ item }}"}
    """

    def odd_fails(x: int) -> dict[str, Any]:
        if x % 2:
            raise RuntimeError(f"odd {x}")
        return {"x": x}

    async def scenario() -> None:
        store = InMemoryStateStore()
        fns = {"odd_fails": odd_fails}
        orch = Orchestrator(
            program(spec, fns),
            store=store,
            runner=InlineRunner(fns),
            artifacts=InMemoryArtifactStore(),
        )
        reference = await orch.run()
        types = store.event_types()
        assert types.count("fan.item_failed") == 2

        cut = next(
            b for b in store.boundaries if types_upto(store, b).count("fan.item_failed") == 1
        )
        c = await crash(store, orch.execution_id, cut, fns)
        crashed = c.store
        result = await c.resume(spec, fns)
        assert 1 not in {call.item_index for call in c.runner.calls}  # failed for good: not rerun
        assert crashed.event_types().count("fan.item_failed") == 2
        assert result.nodes["fan"].outputs == reference.nodes["fan"].outputs
        check_log_invariants(crashed)

    asyncio.run(scenario())
