"""`explain`: each leaf's value at the moment of the decision, and the events that decided it."""

from __future__ import annotations

import asyncio

import pytest
from engine_harness import Run, make, run

from whenflow.domain.records import ExecutionSnapshot
from whenflow.engine.explain import Explanation, NodeNotInPipeline, explain_node

BRANCH = """
inputs:
  amount: {type: number, required: true}
nodes:
  - id: check
    task: {type: noop}
    inputBindings:
      large: "{{ pipeline.input.amount >= 1000 }}"
  - id: review
    startWhen: "event:check.completed && {{ check.large }}"
    task: {type: noop}
  - id: auto
    startWhen: "event:check.completed && {{ not check.large }}"
    task: {type: noop}
  - id: join
    startWhen: "{{ settled(review, auto) and any_ok(review, auto) }}"
    task: {type: noop}
"""


async def wait_forever() -> None:
    await asyncio.Event().wait()


def _snapshot(spec: str, inputs: dict[str, object]) -> tuple[ExecutionSnapshot, Run]:
    done = run(spec, {"wait_forever": wait_forever}, inputs=inputs)
    snapshot = asyncio.run(done.store.load_execution(done.result.execution_id))
    return snapshot, done


def _seq(snapshot: ExecutionSnapshot, event_type: str) -> int:
    return next(e.seq for e in snapshot.events if e.event_type == event_type)


def test_a_skipped_branch_names_the_false_leaf_and_its_deciding_event() -> None:
    snapshot, done = _snapshot(BRANCH, {"amount": 50})
    program = done.orchestrator.program

    found = explain_node(program, snapshot, "review")

    assert found.state == "skipped"
    assert found.start_seq == _seq(snapshot, "review.skipped")
    tree = found.start_when
    assert (tree.kind, tree.value) == ("and", False)
    event_leaf, condition_leaf = tree.children
    assert (event_leaf.kind, event_leaf.value) == ("event", True)
    assert [d.seq for d in event_leaf.decided_by] == [_seq(snapshot, "check.completed")]
    assert (condition_leaf.kind, condition_leaf.value) == ("condition", False)
    assert condition_leaf.reason == "evaluated to False"
    assert found.to_json()["startWhen"]["children"][1]["value"] is False


def test_a_started_branch_and_a_join_are_true_with_every_deciding_event() -> None:
    snapshot, done = _snapshot(BRANCH, {"amount": 5000})
    program = done.orchestrator.program

    review = explain_node(program, snapshot, "review")
    join = explain_node(program, snapshot, "join")

    assert review.verdict.startswith(f"started at seq {_seq(snapshot, 'review.started')}")
    assert [c.value for c in review.start_when.children] == [True, True]
    assert join.start_when.value is True
    assert {d.event_type for d in join.start_when.decided_by} == {
        "review.completed",
        "auto.skipped",
    }


def test_the_default_start_when_is_explained_too() -> None:
    snapshot, done = _snapshot(BRANCH, {"amount": 5})
    program = done.orchestrator.program

    found = explain_node(program, snapshot, "check")

    assert found.start_when.source == "event:pipeline.started"
    assert found.start_when.decided_by[0].seq == 1


async def test_a_waiting_node_shows_the_unknown_leaf_it_waits_for() -> None:
    orch, store = make(
        """
        nodes:
          - id: a
            task: {type: noop}
            inputBindings: {v: 3}
          - id: gate
            startWhen: "event:external.go && {{ a.v > 1 }}"
            task: {type: noop}
        """
    )
    a_done = asyncio.Event()
    orch.add_listener(lambda e: a_done.set() if e.event_type == "a.completed" else None)
    await orch.start()
    await a_done.wait()
    await store.flush()
    snapshot = await store.load_execution(orch.execution_id)

    found = explain_node(orch.program, snapshot, "gate")

    assert found.state == "pending"
    assert found.verdict.startswith("not started: startWhen is unknown")
    external, condition = found.start_when.children
    assert external.value is None
    assert "no external event" in external.reason
    assert condition.value is True
    assert [d.event_type for d in condition.decided_by] == ["a.completed"]
    orch.cancel()
    await orch.wait()


def test_a_stopped_node_explains_its_stop_when() -> None:
    snapshot, done = _snapshot(
        """
        nodes:
          - id: quick
            task: {type: noop}
          - id: slow
            startWhen: "event:pipeline.started"
            stopWhen: "event:quick.completed"
            task: {type: python, callable: wait_forever}
        """,
        {},
    )
    program = done.orchestrator.program
    assert done.status("slow") == "stopped"

    found = explain_node(program, snapshot, "slow")

    assert found.stop_when is not None
    assert found.stop_when.value is True
    assert found.stop_seq == _seq(snapshot, "slow.stopped")
    assert "stopped at seq" in found.verdict


def test_an_event_that_can_no_longer_happen_names_the_ended_nodes() -> None:
    snapshot, done = _snapshot(
        """
        nodes:
          - id: a
            task: {type: noop}
          - id: b
            startWhen: "event:a.failed"
            task: {type: noop}
          - id: c
            startWhen: "event:a.failed || !event:a.completed || false"
            task: {type: noop}
        """,
        {},
    )
    program = done.orchestrator.program

    leaf: Explanation = explain_node(program, snapshot, "b").start_when

    assert leaf.value is False
    assert "a ended without publishing it" in leaf.reason
    assert [d.event_type for d in leaf.decided_by] == ["a.completed"]
    either = explain_node(program, snapshot, "c").start_when
    assert (either.kind, either.value) == ("or", False)
    assert [(c.kind, c.value) for c in either.children] == [
        ("event", False),
        ("not", False),
        ("literal", False),
    ]
    assert either.children[1].children[0].value is True


def test_an_unknown_node_is_a_clear_error() -> None:
    snapshot, done = _snapshot(BRANCH, {"amount": 5})
    program = done.orchestrator.program
    with pytest.raises(NodeNotInPipeline, match="its nodes: check, review, auto, join"):
        explain_node(program, snapshot, "nope")
