"""Reads of events at run time: counts wait, catch-alls fire, undeclared emits fail
(issue 13 items 8 and 9, DESIGN.md §4, §5), asserted as event sequences."""

from __future__ import annotations

from typing import Any

from engine_harness import run

from whenflow.domain.errors import TaskError


def boom() -> dict[str, Any]:
    raise TaskError("boom")


def ticks(n: int) -> Any:
    def feed(ctx: Any) -> dict[str, Any]:
        for i in range(n):
            ctx.emit("tick", {"i": i})
        return {"sent": n}

    return feed


def echo(**inputs: Any) -> dict[str, Any]:
    return dict(inputs)


def test_a_binding_counting_ticks_waits_for_all_of_them() -> None:
    r = run(
        """
        nodes:
          - {id: feed, emits: [tick], task: {type: python, callable: feed}}
          - id: count
            task: {type: python, callable: echo}
            inputBindings: {n: "{{ events('feed.tick') | length }}"}
        """,
        {"feed": ticks(5_000), "echo": echo},
    )
    assert r.result.status.value == "completed"
    assert r.result.nodes["count"].outputs["n"] == 5_000
    assert r.events[:2] == ["pipeline.started", "feed.started"]
    assert r.events[-4:] == [
        "feed.completed",
        "count.started",
        "count.completed",
        "pipeline.completed",
    ]
    assert r.events.count("feed.tick") == 5_000


def test_settled_and_any_ok_in_bindings_wait_for_their_nodes() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: python, callable: feed}, emits: [tick]}
          - id: b
            task: {type: python, callable: echo}
            inputBindings:
              done: "{{ settled(a) }}"
              ok: "{{ any_ok('a') }}"
              seen: "{{ events('a.*') | map(attribute='event_type') | list }}"
        """,
        {"feed": ticks(2), "echo": echo},
    )
    outputs = r.result.nodes["b"].outputs
    assert outputs["done"] is True
    assert outputs["ok"] is True
    assert outputs["seen"] == ["a.started", "a.tick", "a.tick", "a.completed"]
    assert r.events.index("b.started") > r.events.index("a.completed")


CATCH_ALL = """
nodes:
  - {id: a, task: {type: python, callable: A}}
  - {id: b, task: {type: python, callable: B}}
  - {id: on_failure, startWhen: "event:*.failed", task: {type: noop}}
"""


def test_a_catch_all_failure_handler_runs_once_after_a_failure() -> None:
    r = run(CATCH_ALL, {"A": boom, "B": echo})
    assert r.node_events("on_failure") == ["on_failure.started", "on_failure.completed"]
    assert r.events.index("on_failure.started") > r.events.index("a.failed")
    assert r.result.status.value == "failed"


def test_a_catch_all_failure_handler_is_skipped_when_nothing_failed() -> None:
    r = run(CATCH_ALL, {"A": echo, "B": echo})
    assert r.node_events("on_failure") == ["on_failure.skipped"]
    reason = r.payloads("on_failure.skipped")[0]["reason"]
    assert "event:*.failed can no longer happen" in reason
    assert r.result.status.value == "completed"


def test_a_catch_all_completion_handler_starts_at_the_first_completion() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: b, startWhen: "event:a.completed", task: {type: noop}}
          - {id: first_done, startWhen: "event:*.completed", task: {type: noop}}
        """
    )
    assert r.events == [
        "pipeline.started",
        "a.started",
        "a.completed",
        "b.started",
        "first_done.started",
        "b.completed",
        "first_done.completed",
        "pipeline.completed",
    ]


def test_a_glob_stop_when_ignores_the_node_s_own_events() -> None:
    def own(ctx: Any) -> dict[str, Any]:
        ctx.emit("tick", {})
        return {"ran": True}

    r = run(
        """
        nodes:
          - {id: other, emits: [tick], startWhen: "event:worker.completed", task: {type: noop}}
          - id: worker
            emits: [tick]
            stopWhen: "event:*.tick"
            task: {type: python, callable: own}
        """,
        {"own": own},
    )
    assert r.node_events("worker") == ["worker.started", "worker.tick", "worker.completed"]


def test_an_undeclared_emit_fails_the_attempt_with_a_clear_error() -> None:
    def chatty(ctx: Any) -> dict[str, Any]:
        ctx.emit("tick", {})
        ctx.emit("tock", {})
        return {}

    r = run(
        """
        nodes:
          - {id: clock, emits: [tick], task: {type: python, callable: chatty}}
        """,
        {"chatty": chatty},
    )
    assert r.node_events("clock") == ["clock.started", "clock.tick", "clock.failed"]
    error = r.payloads("clock.failed")[0]
    assert "'tock', which it does not declare (declared: tick)" in str(error)
