"""DESIGN.md §5, Deadlines: a node `deadline` over all its attempts, the pipeline `spec.timeout`.

The limits are loop timers, so the tests that watch one fire use short real
durations (a few hundred ms) against tasks that block on an event nobody sets;
the resume tests move the engine's clock instead.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest
from ending_harness import crashed_while, forever, resume, until
from engine_harness import make, program, run_async

from whenflow.domain.errors import DefinitionErrors
from whenflow.domain.records import AttemptRecorded, EventAppended
from whenflow.dsl.load import load_program_file
from whenflow.engine.orchestrator import Orchestrator
from whenflow.testing import InlineRunner, InMemoryStateStore


def fails_then_hangs() -> Any:
    async def task(ctx: Any) -> dict[str, Any]:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        await asyncio.Event().wait()
        return {}

    return task


def attempts(store: InMemoryStateStore, node: str) -> dict[int, AttemptRecorded]:
    """The last row of each attempt of `node`."""
    rows: dict[int, AttemptRecorded] = {}
    for r in store.records:
        if isinstance(r, AttemptRecorded) and r.node_id == node:
            rows[r.attempt] = r
    return rows


async def test_a_node_deadline_counts_over_all_attempts_and_cancels_the_running_one() -> None:
    r = await run_async(
        """
        nodes:
          - id: fetch
            task: {type: python, callable: flaky}
            retry: {maxAttempts: 5, delay: 0s}
            timeout: 1h
            deadline: 300ms
          - {id: after, task: {type: noop}, startWhen: "event:fetch.completed"}
        """,
        {"flaky": fails_then_hangs()},
    )
    assert r.node_events("fetch") == [
        "fetch.started",
        "fetch.retrying",
        "fetch.started",
        "fetch.failed",
    ]
    (failed,) = r.payloads("fetch.failed")
    assert failed["error_type"] == "DeadlineExceeded"
    assert failed["message"] == "deadline 300ms passed during attempt 2"
    assert r.result.status.value == "failed"
    assert r.status("after") == "skipped"
    rows = attempts(r.store, "fetch")
    assert rows[1].error_type == "RuntimeError"
    assert (rows[2].status.value, rows[2].error_type) == ("failed", "DeadlineExceeded")


async def test_a_retry_whose_delay_ends_past_the_deadline_ends_the_node_at_once() -> None:
    def boom() -> dict[str, Any]:
        raise RuntimeError("boom")

    r = await run_async(
        """
        nodes:
          - id: fetch
            task: {type: python, callable: boom}
            retry: {maxAttempts: 3, delay: 1h}
            deadline: 10m
            allowFailure: true
          - {id: report, task: {type: noop}, startWhen: "{{ settled(fetch) }}"}
        """,
        {"boom": boom},
    )
    assert r.node_events("fetch") == ["fetch.started", "fetch.failed"]
    (failed,) = r.payloads("fetch.failed")
    assert failed["message"] == (
        "deadline 10m would pass before attempt 2 (retry delay 1h); attempt 1 failed: RuntimeError: boom"
    )
    # allowFailure applies to a deadline as to any failure.
    assert r.result.status.value == "completed"
    assert r.status("report") == "completed"


async def test_a_deadline_that_does_not_pass_changes_nothing() -> None:
    r = await run_async(
        "nodes: [{id: quick, task: {type: noop}, deadline: 1h}]",
    )
    assert r.events == [
        "pipeline.started",
        "quick.started",
        "quick.completed",
        "pipeline.completed",
    ]


async def test_the_pipeline_timeout_stops_running_work_and_fails_with_its_reason() -> None:
    r = await run_async(
        """
        timeout: 300ms
        nodes:
          - {id: side, task: {type: noop}}
          - {id: long, task: {type: python, callable: forever}}
          - {id: later, task: {type: noop}, startWhen: "event:long.completed"}
        """,
        {"forever": forever},
    )
    assert r.events == [
        "pipeline.started",
        "side.started",
        "long.started",
        "side.completed",
        "long.cancelled",
        "later.cancelled",
        "pipeline.failed",
    ]
    assert r.result.status.value == "failed"
    assert r.result.error == "pipeline timeout 300ms passed"
    assert r.payloads("pipeline.failed") == [{"error": "pipeline timeout 300ms passed"}]
    assert r.payloads("long.cancelled") == [{"reason": "pipeline timeout 300ms passed"}]
    assert attempts(r.store, "long")[1].status.value == "cancelled"


async def test_the_pipeline_timeout_cancels_a_running_sub_pipeline(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: whenflow/v1
            kind: Pipeline
            metadata: {name: child, version: 1.0.0}
            spec:
              nodes: [{id: work, task: {type: python, callable: forever}}]
            """
        )
    )
    parent = tmp_path / "parent.yaml"
    parent.write_text(
        textwrap.dedent(
            """\
            apiVersion: whenflow/v1
            kind: Pipeline
            metadata: {name: parent, version: 1.0.0}
            spec:
              timeout: 300ms
              nodes: [{id: call, task: {type: pipeline, pipeline: ./child.yaml}}]
            """
        )
    )
    runner = InlineRunner({"forever": forever})
    store = InMemoryStateStore()
    orch = Orchestrator(load_program_file(parent, runner), store=store, runner=runner)
    result = await orch.run()
    assert result.status.value == "failed"
    assert store.event_types(orch.execution_id)[-2:] == ["call.cancelled", "pipeline.failed"]
    (child_id,) = {
        r.event.payload["execution_id"]
        for r in store.records
        if isinstance(r, EventAppended) and r.event.event_type == "call.child_started"
    }
    assert store.event_types(child_id)[-2:] == ["work.cancelled", "pipeline.cancelled"]


# --- resume: the limits keep their clock


DEADLINE = """
nodes:
  - {id: fetch, task: {type: python, callable: forever}, deadline: 1m}
"""


async def test_after_a_resume_an_overdue_node_deadline_fails_the_node_without_a_new_attempt() -> (
    None
):
    fns = {"forever": forever}
    execution_id, store = await crashed_while(DEADLINE, "fetch.started", fns)
    result, runner = await resume(DEADLINE, execution_id, store, fns, now=1000.0 + 61)
    assert store.event_types()[2:] == ["pipeline.resumed", "fetch.failed", "pipeline.failed"]
    assert result.nodes["fetch"].error == "deadline 1m passed during attempt 1"
    assert runner.calls == []


async def test_after_a_resume_the_node_deadline_still_counts_from_the_first_attempt() -> None:
    fns = {"forever": forever}
    execution_id, store = await crashed_while(DEADLINE, "fetch.started", fns)
    # 59.7 s of the minute were spent before the crash: the new attempt gets 0.3 s.
    result, runner = await resume(DEADLINE, execution_id, store, fns, now=1000.0 + 59.7)
    assert store.event_types()[2:] == [
        "pipeline.resumed",
        "fetch.started",
        "fetch.failed",
        "pipeline.failed",
    ]
    assert [c.attempt for c in runner.calls] == [2]
    assert result.nodes["fetch"].error == "deadline 1m passed during attempt 2"


TIMEOUT = """
timeout: 5m
nodes:
  - {id: fetch, task: {type: python, callable: forever}}
  - {id: after, task: {type: noop}, startWhen: "event:fetch.completed"}
"""


async def test_an_execution_resumed_after_its_timeout_ends_failed_at_once() -> None:
    fns = {"forever": forever}
    execution_id, store = await crashed_while(TIMEOUT, "fetch.started", fns)
    result, runner = await resume(TIMEOUT, execution_id, store, fns, now=1000.0 + 301)
    assert store.event_types()[2:] == [
        "pipeline.resumed",
        "fetch.cancelled",
        "after.cancelled",
        "pipeline.failed",
    ]
    assert result.error == "pipeline timeout 5m passed"
    assert runner.calls == []


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("deadline: -1", "is negative"),
        ("deadline: 0s", "must be longer than 0"),
        ("deadline: soon", "is not a duration"),
    ],
)
def test_bad_deadlines_are_located_load_errors(field: str, message: str) -> None:
    with pytest.raises(DefinitionErrors) as info:
        program(f"nodes:\n  - id: a\n    task: {{type: noop}}\n    {field}\n")
    text = str(info.value)
    assert message in text
    assert "t.yaml:8:17:" in text  # the value of `deadline:`


def test_a_bad_pipeline_timeout_is_a_located_load_error() -> None:
    with pytest.raises(DefinitionErrors) as info:
        program("timeout: -5m\nnodes: [{id: a, task: {type: noop}}]")
    assert "t.yaml:5:" in str(info.value)
    assert "spec.timeout" in str(info.value)


async def test_a_for_each_nodes_deadline_cancels_its_running_items() -> None:
    r = await run_async(
        """
        nodes:
          - id: fan
            forEach: "{{ [1, 2, 3] }}"
            maxParallel: 2
            deadline: 300ms
            task: {type: python, callable: forever}
            inputBindings: {x: "{{ item }}"}
        """,
        {"forever": forever},
    )
    assert r.node_events("fan") == ["fan.started", "fan.failed"]
    assert r.payloads("fan.failed")[0]["message"] == "deadline 300ms passed during attempt 1"
    rows = [
        (x.item_index, x.status.value, x.error_type)
        for x in r.store.records
        if isinstance(x, AttemptRecorded) and x.node_id == "fan" and x.finished_at is not None
    ]
    assert rows == [(0, "failed", "DeadlineExceeded"), (1, "failed", "DeadlineExceeded")]


async def test_the_pipeline_timeout_ends_a_wait_for_a_decision() -> None:
    r = await run_async(
        """
        timeout: 300ms
        nodes:
          - {id: review, task: {type: approval}}
          - {id: ship, task: {type: noop}, startWhen: "event:review.approved"}
        """,
        inbox_poll_s=None,
    )
    assert r.events == [
        "pipeline.started",
        "review.waiting",
        "review.cancelled",
        "ship.cancelled",
        "pipeline.failed",
    ]
    assert r.result.error == "pipeline timeout 300ms passed"


async def test_halting_the_process_disarms_the_limits_for_the_resume_to_arm_again() -> None:
    orch, _ = make(
        "timeout: 1h\nnodes: [{id: fetch, task: {type: python, callable: forever}, deadline: 1h}]",
        {"forever": forever},
        inbox_poll_s=None,
    )
    started = until(orch, "fetch.started")
    await orch.start()
    await started
    handles = list(orch.state.within_handles)
    assert len(handles) == 2  # the pipeline timeout and the node's deadline
    await orch.halt()
    assert all(h.cancelled() for h in handles)
    assert orch.status.value == "running"  # halted, not ended: resumable
