"""DESIGN.md §5, Cleanup: `finally: true` nodes run however the execution ends.

Each test asserts the ordered event log: a finally node starts after
`pipeline.ending`, which comes once every other node has ended or the
execution ends early (failFast, a pipeline stopWhen, the timeout, a cancel).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ending_harness import crashed_while, cut_after, forever, resume, until
from engine_harness import check_log_invariants, make, program, run_async

from whenflow.domain.errors import DefinitionErrors
from whenflow.testing import InMemoryStateStore

# The finally node comes first on purpose: definition order does not start it.
CLEANUP = """
  - id: cleanup
    finally: true
    task: {type: noop}
    inputBindings:
      status: "{{ ending.status }}"
      reason: "{{ ending.reason }}"
      failed: "{{ ending.failed }}"
"""


def spec(body: str, head: str = "") -> str:
    return f"{head}\nnodes:{CLEANUP}{body}"


def boom() -> dict[str, Any]:
    raise RuntimeError("boom")


async def test_a_finally_node_runs_last_when_the_rest_completes() -> None:
    r = await run_async(
        spec(
            """
  - {id: a, task: {type: noop}}
  - {id: b, task: {type: noop}, startWhen: "event:a.completed"}
  - {id: only_on_failure, task: {type: noop}, startWhen: "event:b.failed"}
"""
        )
    )
    assert r.events == [
        "pipeline.started",
        "a.started",
        "a.completed",
        "b.started",
        "b.completed",
        "only_on_failure.skipped",
        "pipeline.ending",
        "cleanup.started",
        "cleanup.completed",
        "pipeline.completed",
    ]
    assert r.result.nodes["cleanup"].outputs == {"status": "completed", "reason": "", "failed": []}
    assert r.result.status.value == "completed"


async def test_a_finally_node_runs_after_fail_fast_and_sees_why() -> None:
    r = await run_async(
        spec(
            """
  - {id: a, task: {type: python, callable: boom}}
  - {id: long, task: {type: python, callable: forever}}
""",
            "failFast: true",
        ),
        {"boom": boom, "forever": forever},
    )
    assert r.events == [
        "pipeline.started",
        "a.started",
        "long.started",
        "a.failed",
        "long.cancelled",
        "pipeline.ending",
        "cleanup.started",
        "cleanup.completed",
        "pipeline.failed",
    ]
    assert r.result.nodes["cleanup"].outputs == {
        "status": "failed",
        "reason": "failFast: node 'a' failed",
        "failed": ["a"],
    }
    assert r.result.error == "failFast: node 'a' failed"


async def test_a_finally_node_runs_after_a_pipeline_stop_when() -> None:
    r = await run_async(
        spec(
            """
  - {id: a, task: {type: noop}}
  - {id: long, task: {type: python, callable: forever}}
""",
            'stopWhen: "event:a.completed"',
        ),
        {"forever": forever},
    )
    assert r.events[-5:] == [
        "long.stopped",
        "pipeline.ending",
        "cleanup.started",
        "cleanup.completed",
        "pipeline.stopped",
    ]
    assert r.result.nodes["cleanup"].outputs["status"] == "stopped"
    assert r.result.nodes["cleanup"].outputs["reason"].startswith("pipeline stopWhen: ")
    assert r.payloads("pipeline.ending")[0]["early"] is True


async def test_a_finally_node_runs_after_the_pipeline_timeout() -> None:
    r = await run_async(
        spec("\n  - {id: long, task: {type: python, callable: forever}}\n", "timeout: 300ms"),
        {"forever": forever},
    )
    assert r.events == [
        "pipeline.started",
        "long.started",
        "long.cancelled",
        "pipeline.ending",
        "cleanup.started",
        "cleanup.completed",
        "pipeline.failed",
    ]
    assert r.result.nodes["cleanup"].outputs["reason"] == "pipeline timeout 300ms passed"
    assert r.result.error == "pipeline timeout 300ms passed"


async def test_a_finally_node_runs_after_a_cancel() -> None:
    orch, store = make(
        spec("\n  - {id: long, task: {type: python, callable: forever}}\n"), {"forever": forever}
    )
    started = until(orch, "long.started")
    await orch.start()
    await started
    orch.cancel("user asked")
    result = await asyncio.wait_for(orch.wait(), 10)
    assert store.event_types() == [
        "pipeline.started",
        "long.started",
        "long.cancelled",
        "pipeline.ending",
        "cleanup.started",
        "cleanup.completed",
        "pipeline.cancelled",
    ]
    assert result.status.value == "cancelled"
    assert result.nodes["cleanup"].outputs["status"] == "cancelled"
    assert result.nodes["cleanup"].outputs["reason"] == "user asked"
    check_log_invariants(store)


HANGING = """
finallyGrace: %s
nodes:
  - {id: long, task: {type: python, callable: forever}}
  - {id: cleanup, finally: true, task: {type: python, callable: hang}}
"""


async def test_a_second_cancel_ends_a_hanging_finally_node_at_once() -> None:
    cleaning = asyncio.Event()

    async def hang() -> dict[str, Any]:
        cleaning.set()
        await asyncio.Event().wait()
        return {}

    orch, store = make(HANGING % "1h", {"forever": forever, "hang": hang})
    started = until(orch, "long.started")
    await orch.start()
    await started
    orch.cancel("first")
    await cleaning.wait()
    orch.cancel("second")
    result = await asyncio.wait_for(orch.wait(), 10)
    assert store.event_types()[-4:] == [
        "pipeline.ending",
        "cleanup.started",
        "cleanup.cancelled",
        "pipeline.cancelled",
    ]
    assert result.nodes["cleanup"].reason == "cancelled again while finally nodes ran: second"
    assert result.status.value == "cancelled"


async def test_after_a_cancel_a_hanging_finally_node_is_cut_by_the_grace() -> None:
    async def hang() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    orch, store = make(HANGING % "200ms", {"forever": forever, "hang": hang})
    started = until(orch, "long.started")
    await orch.start()
    await started
    orch.cancel("only once")
    result = await asyncio.wait_for(orch.wait(), 10)
    assert store.event_types()[-3:] == [
        "cleanup.started",
        "cleanup.cancelled",
        "pipeline.cancelled",
    ]
    assert result.nodes["cleanup"].reason == "finallyGrace 200ms passed after the cancel"
    assert result.status.value == "cancelled"


async def test_a_cancel_during_cleanup_after_fail_fast_gives_the_grace_then_a_second_ends_it() -> (
    None
):
    cleaning = asyncio.Event()

    async def hang() -> dict[str, Any]:
        cleaning.set()
        await asyncio.Event().wait()
        return {}

    orch, store = make(
        """
        failFast: true
        finallyGrace: 200ms
        nodes:
          - {id: a, task: {type: python, callable: boom}}
          - {id: cleanup, finally: true, task: {type: python, callable: hang}}
        """,
        {"boom": boom, "hang": hang},
    )
    await orch.start()
    await cleaning.wait()
    orch.cancel("impatient")  # not yet bounded (failFast): the grace starts now
    result = await asyncio.wait_for(orch.wait(), 10)
    assert store.event_types()[-3:] == ["cleanup.started", "cleanup.cancelled", "pipeline.failed"]
    assert result.nodes["cleanup"].reason == "finallyGrace 200ms passed after the cancel"
    assert result.error == "failFast: node 'a' failed"


async def test_an_internal_error_ends_the_finally_nodes_too() -> None:
    orch, _ = make(
        """
        nodes:
          - {id: long, task: {type: python, callable: forever}}
          - {id: cleanup, finally: true, task: {type: python, callable: forever}}
        """,
        {"forever": forever},
    )
    started, cleaning = until(orch, "long.started"), until(orch, "cleanup.started")
    await orch.start()
    await started
    orch.cancel("first")
    await cleaning

    def bug() -> None:
        raise RuntimeError("a bug in a handler")

    orch.state.run_unit(bug)  # a hanging cleanup must not hang a broken execution
    result = await asyncio.wait_for(orch.wait(), 10)
    assert result.error == "internal error: RuntimeError: a bug in a handler"
    assert result.nodes["cleanup"].status.value == "cancelled"
    assert result.status.is_terminal


async def test_a_failed_finally_node_fails_the_execution_and_the_error_says_both() -> None:
    r = await run_async(
        """
        failFast: true
        nodes:
          - {id: a, task: {type: python, callable: boom}}
          - {id: cleanup, finally: true, task: {type: python, callable: boom}}
        """,
        {"boom": boom},
    )
    assert r.result.status.value == "failed"
    assert r.result.error == "failFast: node 'a' failed; then finally node(s) failed: cleanup"

    r = await run_async(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: cleanup, finally: true, task: {type: python, callable: boom}}
        """,
        {"boom": boom},
    )
    assert r.result.status.value == "failed"
    assert r.result.error == "the other nodes completed; then finally node(s) failed: cleanup"


async def test_a_finally_node_that_may_fail_leaves_the_outcome_alone() -> None:
    r = await run_async(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: cleanup, finally: true, allowFailure: true, task: {type: python, callable: boom}}
        """,
        {"boom": boom},
    )
    assert r.events[-3:] == ["cleanup.started", "cleanup.failed", "pipeline.completed"]
    assert r.result.status.value == "completed"


async def test_a_finally_nodes_start_when_is_anded_and_decided_at_the_ending() -> None:
    r = await run_async(
        """
        nodes:
          - {id: a, task: {type: python, callable: boom}}
          - id: on_failure
            finally: true
            startWhen: "{{ ending.status == 'failed' }} && event:a.failed"
            task: {type: noop}
          - id: on_success
            finally: true
            startWhen: "{{ ending.status == 'completed' }}"
            task: {type: noop}
        """,
        {"boom": boom},
    )
    assert r.events == [
        "pipeline.started",
        "a.started",
        "a.failed",
        "pipeline.ending",
        "on_success.skipped",
        "on_failure.started",
        "on_failure.completed",
        "pipeline.failed",
    ]
    assert r.payloads("on_success.skipped")[0]["reason"] == (
        "startWhen is false: {{ ending.status == 'completed' }} is false"
    )
    assert r.result.error == "node(s) failed: a"


async def test_a_finally_node_for_each_and_a_failed_body_node() -> None:
    r = await run_async(
        """
        nodes:
          - {id: a, task: {type: python, callable: boom}, allowFailure: true}
          - id: cleanup
            finally: true
            forEach: "{{ ['x', 'y'] }}"
            task: {type: noop}
            inputBindings: {what: "{{ item }}", failed: "{{ ending.failed }}"}
        """,
        {"boom": boom},
    )
    assert r.result.status.value == "completed"
    assert r.result.nodes["cleanup"].outputs["results"] == [
        {"what": "x", "failed": ["a"]},
        {"what": "y", "failed": ["a"]},
    ]


async def test_a_finally_node_reads_what_a_failed_node_never_wrote_through_default() -> None:
    r = await run_async(
        """
        nodes:
          - {id: lease, task: {type: python, callable: boom}}
          - id: release
            finally: true
            task: {type: noop}
            inputBindings: {lease: "{{ lease.id | default('none') }}"}
          - id: strict
            finally: true
            allowFailure: true
            task: {type: noop}
            inputBindings: {lease: "{{ lease.id }}"}
        """,
        {"boom": boom},
    )
    assert r.result.nodes["release"].outputs == {"lease": "none"}
    assert r.result.nodes["strict"].error == (
        "node 'strict', input 'lease': reads a value that was never written "
        "(its node was skipped, failed, or did not produce it)"
    )
    assert r.result.error == "node(s) failed: lease"


# --- resume


RESUMED = """
nodes:
  - {id: long, task: {type: python, callable: forever}}
  - id: cleanup
    finally: true
    task: {type: python, callable: clean}
    inputBindings: {status: "{{ ending.status }}"}
"""


async def test_a_crash_while_a_finally_node_runs_reruns_it_and_ends_as_it_would_have() -> None:
    seen: list[tuple[int, str]] = []

    async def clean(ctx: Any, status: str) -> dict[str, Any]:
        seen.append((ctx.attempt, status))
        if ctx.attempt == 1:
            await asyncio.Event().wait()
        return {"saw": status}

    fns = {"forever": forever, "clean": clean}
    orch, store = make(RESUMED, fns, clock=lambda: 1000.0, inbox_poll_s=None)
    started = until(orch, "long.started")
    cleaning = until(orch, "cleanup.started")
    await orch.start()
    await started
    orch.cancel("user asked")
    await cleaning
    execution_id = orch.execution_id
    # The crash: only what was durable once cleanup had started survives.
    crashed = InMemoryStateStore()
    crashed.records = store.records[: cut_after(store, "cleanup.started")]
    orch.cancel("stop the first process")
    await orch.wait()

    result, runner = await resume(RESUMED, execution_id, crashed, fns, now=1000.0)
    assert crashed.event_types() == [
        "pipeline.started",
        "long.started",
        "long.cancelled",
        "pipeline.ending",
        "cleanup.started",
        "pipeline.resumed",
        "cleanup.started",
        "cleanup.completed",
        "pipeline.cancelled",
    ]
    assert [c.attempt for c in runner.calls] == [2]
    assert seen[-1] == (2, "cancelled")
    assert result.status.value == "cancelled"
    assert result.nodes["cleanup"].outputs == {"saw": "cancelled"}


async def test_a_resume_after_the_timeout_still_runs_the_finally_node() -> None:
    text = "timeout: 5m\n" + RESUMED

    async def clean(status: str) -> dict[str, Any]:
        return {"saw": status}

    fns = {"forever": forever, "clean": clean}
    execution_id, store = await crashed_while(text, "long.started", fns)
    result, runner = await resume(text, execution_id, store, fns, now=1000.0 + 301)
    assert store.event_types()[2:] == [
        "pipeline.resumed",
        "long.cancelled",
        "pipeline.ending",
        "cleanup.started",
        "cleanup.completed",
        "pipeline.failed",
    ]
    assert [c.node_id for c in runner.calls] == ["cleanup"]
    assert result.error == "pipeline timeout 5m passed"


# --- validation


@pytest.mark.parametrize(
    ("nodes", "where", "message"),
    [
        (
            '  - {id: a, task: {type: noop}, finally: "yes"}',
            "t.yaml:6:",
            "nodes.a.finally: must be a valid boolean, got 'yes'",
        ),
        (
            "  - {id: a, task: {type: noop}, startWhen: event:cleanup.completed}\n"
            "  - {id: cleanup, task: {type: noop}, finally: true}",
            "t.yaml:6:",
            "'cleanup' is a finally node: it starts only once every other node has ended",
        ),
        (
            "  - {id: a, task: {type: noop}, inputBindings: {s: '{{ ending.status }}'}}",
            "t.yaml:6:",
            "'ending' is only defined in the bindings, task fields and startWhen of a node "
            "with `finally: true`",
        ),
        (
            "  - {id: a, task: {type: noop}, finally: true}\n"
            "  - {id: b, task: {type: noop}, finally: true, startWhen: event:a.completed}",
            "t.yaml:7:",
            "finally nodes start together",
        ),
    ],
)
def test_finally_mistakes_are_located_load_errors(nodes: str, where: str, message: str) -> None:
    with pytest.raises(DefinitionErrors) as info:
        program(f"nodes:\n{nodes}\n")
    text = str(info.value)
    assert message in text, text
    assert where in text, text


def test_a_finally_nodes_effective_start_is_the_ending() -> None:
    compiled = program(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: c, finally: true, task: {type: noop}, startWhen: "{{ ending.status == 'failed' }}"}
          - {id: d, finally: true, task: {type: noop}, inputBindings: {x: "{{ a.x }}"}}
        """
    )
    assert compiled.effective_start_when("c") == (
        "event:pipeline.ending && {{ ending.status == 'failed' }}"
    )
    assert compiled.effective_start_when("d") == "event:pipeline.ending"


BOUNDARIES = """
failFast: true
nodes:
  - {id: a, task: {type: noop}, inputBindings: {v: 1}}
  - {id: b, task: {type: python, callable: boom}, startWhen: "event:a.completed"}
  - {id: c, task: {type: noop}, startWhen: "event:b.completed"}
  - id: cleanup
    finally: true
    task: {type: noop}
    inputBindings: {status: "{{ ending.status }}", reason: "{{ ending.reason }}", v: "{{ a.v }}"}
"""


async def test_resume_from_every_durable_boundary_ends_as_the_run_did() -> None:
    fns = {"boom": boom}
    orch, store = make(BOUNDARIES, fns, clock=lambda: 1000.0, inbox_poll_s=None)
    reference = await orch.run()
    assert reference.nodes["cleanup"].outputs == {
        "status": "failed",
        "reason": "failFast: node 'b' failed",
        "v": 1,
    }
    resumed = 0
    for cut in store.boundaries:
        crashed = InMemoryStateStore()
        crashed.records = list(store.records[:cut])
        snapshot = await crashed.load_execution(orch.execution_id)
        if snapshot.status.is_terminal:
            continue
        result, _ = await resume(BOUNDARIES, orch.execution_id, crashed, fns, now=1000.0)
        resumed += 1
        assert result.status == reference.status, cut
        assert result.error == reference.error, cut
        assert result.nodes["cleanup"].outputs == reference.nodes["cleanup"].outputs, cut
        assert crashed.event_types().count("pipeline.ending") == 1, cut
    assert resumed >= 4
