"""DESIGN.md §4 — trigger expressions, asserted as the sequence of events an execution produced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from engine_harness import make, run, run_async

from whenflow.domain.errors import TaskError


def boom() -> dict[str, Any]:
    raise TaskError("boom")


def gated() -> dict[str, Callable[[], Any]]:
    """Tasks `slow` (waits) and `release` (lets it finish): an order without sleeps."""
    gate = asyncio.Event()

    async def slow() -> dict[str, Any]:
        await gate.wait()
        return {}

    def release() -> dict[str, Any]:
        gate.set()
        return {}

    return {"slow": slow, "release": release}


def test_default_start_when_is_strict_all_success() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: python, callable: boom}}
          - {id: b, task: {type: noop}, inputBindings: {x: "{{ a.v }}"}}
        """,
        {"boom": boom},
    )
    assert r.events == [
        "pipeline.started",
        "a.started",
        "a.failed",
        "b.skipped",
        "pipeline.failed",
    ]
    assert "event:a.completed can no longer happen" in r.payloads("b.skipped")[0]["reason"]


def test_condition_true_starts_and_false_skips_at_once() -> None:
    spec = """
    inputs: {n: {type: integer}}
    nodes:
      - {id: extract, task: {type: noop}, inputBindings: {rows: "{{ pipeline.input.n }}"}}
      - id: transform
        startWhen: "event:extract.completed && {{ extract.rows > 0 }}"
        task: {type: noop}
      - id: notify_empty
        startWhen: "event:extract.completed && {{ extract.rows == 0 }}"
        task: {type: noop}
    """
    with_rows = run(spec, inputs={"n": 3})
    assert with_rows.events == [
        "pipeline.started",
        "extract.started",
        "extract.completed",
        "notify_empty.skipped",
        "transform.started",
        "transform.completed",
        "pipeline.completed",
    ]
    empty = run(spec, inputs={"n": 0})
    assert empty.events == [
        "pipeline.started",
        "extract.started",
        "extract.completed",
        "transform.skipped",
        "notify_empty.started",
        "notify_empty.completed",
        "pipeline.completed",
    ]


def test_event_glob_is_true_on_the_first_matching_event() -> None:
    r = run(
        """
        nodes:
          - {id: shard_a, task: {type: noop}}
          - {id: shard_b, task: {type: python, callable: slow}}
          - id: first_done
            startWhen: "event:shard_*.completed"
            task: {type: python, callable: release}
        """,
        gated(),
    )
    events = r.events
    assert events.index("first_done.started") < events.index("shard_b.completed")
    assert events.index("shard_a.completed") < events.index("first_done.started")


def test_or_fires_on_the_first_true_branch_kleene() -> None:
    r = run(
        """
        nodes:
          - {id: fast, task: {type: noop}}
          - {id: slow, task: {type: python, callable: slow}}
          - id: either
            startWhen: "event:fast.completed || event:slow.completed"
            task: {type: python, callable: release}
        """,
        gated(),
    )
    assert r.node_events("either") == ["either.started", "either.completed"]
    assert r.events.index("either.started") < r.events.index("slow.completed")


def test_and_with_a_false_branch_is_false_before_the_rest_is_known() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: python, callable: boom}, allowFailure: true}
          - {id: slow, task: {type: python, callable: slow}}
          - id: both
            startWhen: "event:a.completed && event:slow.completed"
            task: {type: noop}
          - {id: opener, startWhen: "event:both.skipped", task: {type: python, callable: release}}
        """,
        {"boom": boom, **gated()},
    )
    # false && unknown = false: `both` is skipped while `slow` is still running.
    assert r.events.index("both.skipped") < r.events.index("slow.completed")
    assert r.status("opener") == "completed"


def test_not_of_an_event_is_true_once_the_node_ended_without_it() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: python, callable: boom}, allowFailure: true}
          - {id: fallback, startWhen: "!event:a.completed", task: {type: noop}}
          - {id: on_success, startWhen: "event:a.completed", task: {type: noop}}
        """,
        {"boom": boom},
    )
    assert r.status("fallback") == "completed"
    assert r.status("on_success") == "skipped"
    assert r.result.status.value == "completed"


def test_a_missing_variable_compares_false() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: python, callable: boom}, allowFailure: true}
          - id: b
            startWhen: "{{ a.rows > 0 or a.rows == 0 or a.rows < 0 }}"
            task: {type: noop}
          - id: c
            startWhen: "{{ a.rows is not defined }}"
            task: {type: noop}
        """,
        {"boom": boom},
    )
    assert r.status("b") == "skipped"
    assert r.status("c") == "completed"


def test_condition_is_unknown_until_the_nodes_it_reads_are_terminal() -> None:
    order: list[str] = []

    def record(name: str) -> dict[str, Any]:
        order.append(name)
        return {"v": len(order)}

    r = run(
        """
        nodes:
          - {id: a, task: {type: python, callable: record}, inputBindings: {name: a}}
          - {id: b, task: {type: python, callable: record}, inputBindings: {name: b}}
          - id: sum_ok
            startWhen: "{{ a.v + b.v == 3 }}"
            task: {type: noop}
        """,
        {"record": record},
    )
    assert r.events.index("sum_ok.started") > r.events.index("a.completed")
    assert r.events.index("sum_ok.started") > r.events.index("b.completed")


def test_join_after_a_branch_runs_exactly_once() -> None:
    spec = """
    inputs: {amount: {type: number}}
    nodes:
      - id: check
        task: {type: noop}
        inputBindings: {large: "{{ pipeline.input.amount >= 1000 }}"}
      - {id: review, startWhen: "event:check.completed && {{ check.large }}", task: {type: noop}}
      - {id: auto, startWhen: "event:check.completed && {{ not check.large }}", task: {type: noop}}
      - id: join
        startWhen: "{{ settled(review, auto) and any_ok(review, auto) }}"
        task: {type: noop}
    """
    for amount, taken, skipped in ((5000, "review", "auto"), (10, "auto", "review")):
        r = run(spec, inputs={"amount": amount})
        assert r.node_events("join") == ["join.started", "join.completed"]
        assert r.status(taken) == "completed"
        assert r.status(skipped) == "skipped"
        assert r.events.index("join.started") > r.events.index(f"{taken}.completed")


def test_events_helper_counts_matching_events() -> None:
    r = run(
        """
        nodes:
          - {id: shard_1, task: {type: noop}}
          - {id: shard_2, task: {type: python, callable: boom}, allowFailure: true}
          - {id: shard_3, task: {type: noop}}
          - id: quorum
            startWhen: "{{ events('shard_*.completed') | length >= 2 }}"
            task: {type: noop}
          - id: unanimous
            startWhen: "{{ events('shard_*.completed') | length == 3 }}"
            task: {type: noop}
        """,
        {"boom": boom},
    )
    assert r.status("quorum") == "completed"
    assert r.status("unanimous") == "skipped"


def test_runtime_error_in_a_condition_fails_the_node_with_the_expression() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}, inputBindings: {n: 1}}
          - {id: b, startWhen: "{{ a.n + 'x' == 2 }}", task: {type: noop}}
        """
    )
    assert r.node_events("b") == ["b.failed"]
    payload = r.payloads("b.failed")[0]
    assert payload["error_type"] == "ExpressionError"
    assert "a.n + 'x' == 2" in payload["message"]
    assert r.result.status.value == "failed"


def test_custom_event_triggers_another_node_while_the_task_runs() -> None:
    gate = asyncio.Event()

    async def trainer(ctx: Any) -> dict[str, Any]:
        ctx.emit("epoch_done", {"epoch": 1})
        await gate.wait()
        return {"epochs": 1}

    def watch() -> dict[str, Any]:
        gate.set()
        return {}

    r = run(
        """
        nodes:
          - {id: train, emits: [epoch_done], task: {type: python, callable: trainer}}
          - {id: watcher, startWhen: "event:train.epoch_done", task: {type: python, callable: watch}}
        """,
        {"trainer": trainer, "watch": watch},
    )
    assert r.events == [
        "pipeline.started",
        "train.started",
        "train.epoch_done",
        "watcher.started",
        "watcher.completed",
        "train.completed",
        "pipeline.completed",
    ]
    assert r.payloads("train.epoch_done")[0]["epoch"] == 1


def test_a_custom_event_that_never_comes_is_false_once_its_node_ended() -> None:
    r = run(
        """
        nodes:
          - {id: train, emits: [epoch_done], task: {type: noop}}
          - {id: watcher, startWhen: "event:train.epoch_done", task: {type: noop}}
        """
    )
    assert r.node_events("watcher") == ["watcher.skipped"]


def test_quiescence_skips_what_can_never_start() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: never, startWhen: "event:pipeline.completed", task: {type: noop}}
          - {id: after_never, startWhen: "event:never.completed", task: {type: noop}}
        """
    )
    assert r.result.status.value == "completed"
    assert r.node_events("never") == ["never.skipped"]
    assert r.node_events("after_never") == ["after_never.skipped"]
    assert "unsatisfiable" in r.payloads("never.skipped")[0]["reason"]


async def test_external_event_starts_a_waiting_node() -> None:
    orch, store = make(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: on_go, startWhen: "event:external.go", task: {type: noop}}
        """
    )
    waiting = asyncio.get_running_loop().create_future()

    def listener(event: Any) -> None:
        if event.event_type == "a.completed" and not waiting.done():
            waiting.set_result(None)

    orch.add_listener(listener)
    await orch.start()
    await waiting
    orch.post_external_event("go", {"by": "test"})
    result = await orch.wait()
    assert result.status.value == "completed"
    assert store.event_types()[-4:] == [
        "external.go",
        "on_go.started",
        "on_go.completed",
        "pipeline.completed",
    ]


async def test_within_deadline_makes_an_external_event_count_as_never_coming() -> None:
    r = await run_async(
        """
        nodes:
          - {id: on_go, startWhen: "event:external.go", within: 20ms, task: {type: noop}}
          - {id: otherwise, startWhen: "!event:external.go", within: 20ms, task: {type: noop}}
        """
    )
    assert r.node_events("on_go") == ["on_go.skipped"]
    assert r.status("otherwise") == "completed"


def test_literal_triggers() -> None:
    r = run(
        """
        nodes:
          - {id: always, startWhen: "true", task: {type: noop}}
          - {id: never, startWhen: "false", task: {type: noop}}
        """
    )
    assert r.status("always") == "completed"
    assert r.node_events("never") == ["never.skipped"]


@pytest.mark.parametrize("width", [1, 50])
def test_fan_in_countdown_waits_for_every_input(width: int) -> None:
    nodes = "\n".join(
        f"  - {{id: s{i}, task: {{type: noop}}, inputBindings: {{v: {i}}}}}" for i in range(width)
    )
    reads = ", ".join(f"s{i}: '{{{{ s{i}.v }}}}'" for i in range(width))
    r = run(
        f"nodes:\n{nodes}\n  - {{id: join, task: {{type: noop}}, inputBindings: {{{reads}}}}}\n"
    )
    assert r.node_events("join") == ["join.started", "join.completed"]
    assert r.events.index("join.started") > max(
        r.events.index(f"s{i}.completed") for i in range(width)
    )
    assert r.result.nodes["join"].outputs == {f"s{i}": i for i in range(width)}


async def test_quiescence_waits_while_a_node_waits_for_an_external_event() -> None:
    r = await run_async(
        """
        nodes:
          - {id: wait_signal, startWhen: "event:external.go", within: 30ms, task: {type: noop}}
          - {id: after, startWhen: "event:wait_signal.completed || event:pipeline.completed", task: {type: noop}}
        """
    )
    # `after` is only given up once `wait_signal` can no longer run (its deadline passed).
    assert r.events == [
        "pipeline.started",
        "wait_signal.skipped",
        "after.skipped",
        "pipeline.completed",
    ]


def test_secret_without_a_backend_fails_only_the_node() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: b, startWhen: "{{ secret('TOKEN') == 'x' }}", task: {type: noop}}
        """
    )
    assert r.node_events("b") == ["b.failed"]
    assert "secret('TOKEN')" in r.payloads("b.failed")[0]["message"]
    assert r.status("a") == "completed"
    assert r.result.status.value == "failed"


def test_quoted_node_names_in_settled_are_waited_for() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: b, startWhen: "{{ settled('a') and any_ok('a') }}", task: {type: noop}}
        """
    )
    assert r.events.index("b.started") > r.events.index("a.completed")


def test_a_glob_source_never_means_external_events() -> None:
    r = run(
        """
        nodes:
          - {id: extract, task: {type: noop}}
          - {id: on_fail, startWhen: "event:e*.failed", task: {type: noop}}
        """
    )
    assert r.result.status.value == "completed"
    assert r.node_events("on_fail") == ["on_fail.skipped"]


async def test_the_execution_is_running_again_after_an_external_event() -> None:
    from whenflow.domain.records import ExecutionUpdated

    orch, store = make(
        """
        nodes:
          - {id: on_go, startWhen: "event:external.go", task: {type: noop}}
        """
    )
    await orch.start()
    assert orch.status.value == "waiting"
    orch.post_external_event("go")
    result = await orch.wait()
    statuses = [r.status.value for r in store.records if isinstance(r, ExecutionUpdated)]
    assert statuses == ["waiting", "running", "completed"]
    assert result.status.value == "completed"
