"""DESIGN.md §5 — approvals: a node waits for a decision, then completes either way.

Each test asserts the sequence of events. Decisions come in through
`Orchestrator.decide` (same process) or the store's inbox (another process),
always after the test has seen `<node>.waiting`, never after a sleep.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_harness import check_log_invariants, make, program

from whenflow.domain.errors import DefinitionErrors
from whenflow.domain.records import EventAppended, ExecutionUpdated, MessageKind
from whenflow.engine.orchestrator import Orchestrator
from whenflow.testing import InlineRunner, InMemoryArtifactStore, InMemoryStateStore

REVIEW = """
nodes:
  - {id: prepare, task: {type: noop}, inputBindings: {rows: 10}}
  - id: review
    startWhen: event:prepare.completed
    inputBindings: {rows: "{{ prepare.rows }}"}
    task:
      type: approval
      message: "Publish {{ prepare.rows }} rows?"
      approvers: [alice, bob]
  - id: publish
    startWhen: event:review.approved
    task: {type: noop}
    inputBindings: {by: "{{ review.by }}", note: "{{ review.comment }}"}
  - {id: discard, startWhen: event:review.rejected, task: {type: noop}}
outputs:
  decision: "{{ review.decision }}"
"""


def until(orch: Orchestrator, event_type: str) -> asyncio.Future[None]:
    """A future set when the execution publishes `event_type`."""
    seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def listener(event: Any) -> None:
        if event.event_type == event_type and not seen.done():
            seen.set_result(None)

    orch.add_listener(listener)
    return seen


async def parked(spec: str, **options: Any) -> tuple[Orchestrator, InMemoryStateStore]:
    """An execution started and waiting at its approval node `review`."""
    orch, store = make(spec, **options)
    waiting = until(orch, "review.waiting")
    await orch.start()
    await waiting
    return orch, store


def statuses(store: InMemoryStateStore) -> list[str]:
    return [r.status.value for r in store.records if isinstance(r, ExecutionUpdated)]


async def test_approve_publishes_approved_then_completes_and_its_branch_runs() -> None:
    orch, store = await parked(REVIEW)
    assert orch.status.value == "waiting"
    (payload,) = [e.payload for e in store.events() if e.event_type == "review.waiting"]
    assert payload["message"] == "Publish 10 rows?"
    assert payload["inputs"] == {"rows": 10}
    assert payload["approvers"] == ["alice", "bob"]
    assert payload["deadline"] is None

    assert orch.decide("review", True, "alice", "looks good") is None
    result = await orch.wait()

    assert store.event_types() == [
        "pipeline.started",
        "prepare.started",
        "prepare.completed",
        "review.waiting",
        "review.approved",
        "review.completed",
        "discard.skipped",
        "publish.started",
        "publish.completed",
        "pipeline.completed",
    ]
    assert result.status.value == "completed"
    review = result.nodes["review"].outputs
    assert review["decision"] == "approved"
    assert review["approved"] is True
    assert review["by"] == "alice"
    assert review["comment"] == "looks good"
    assert review["at"].endswith("+00:00")
    assert result.nodes["publish"].outputs == {"by": "alice", "note": "looks good"}
    assert result.outputs == {"decision": "approved"}
    # waiting while only the approval was left, running again after the decision
    assert statuses(store)[:2] == ["waiting", "running"]
    check_log_invariants(store)


async def test_reject_completes_the_node_and_takes_the_other_branch() -> None:
    orch, store = await parked(REVIEW)
    assert orch.decide("review", False, "bob", "too few rows") is None
    result = await orch.wait()
    assert [e for e in store.event_types() if not e.startswith("prepare.")] == [
        "pipeline.started",
        "review.waiting",
        "review.rejected",
        "review.completed",
        "publish.skipped",
        "discard.started",
        "discard.completed",
        "pipeline.completed",
    ]
    assert result.status.value == "completed"
    assert result.nodes["review"].status.value == "completed"
    assert result.nodes["review"].outputs["decision"] == "rejected"
    (rejected,) = [e.payload for e in store.events() if e.event_type == "review.rejected"]
    assert rejected == {"by": "bob", "comment": "too few rows"}


async def test_a_decision_is_refused_unless_the_node_waits_and_the_person_may_decide() -> None:
    orch, store = make(REVIEW)
    started = until(orch, "pipeline.started")
    waiting = until(orch, "review.waiting")
    await orch.start()
    await started
    with pytest.raises(KeyError, match="no node 'nope'"):
        orch.decide("nope", True, "alice")
    assert orch.decide("publish", True, "alice") == "node 'publish' is not an approval"
    await waiting
    assert orch.decide("review", True, "mallory") == (
        "'mallory' may not decide 'review'; approvers: alice, bob"
    )
    assert orch.status.value == "waiting"
    assert orch.decide("review", True, "bob") is None
    assert orch.decide("review", False, "alice") == (
        "node 'review' is completed, not waiting for a decision"
    )
    result = await orch.wait()
    assert result.nodes["review"].outputs["by"] == "bob"
    assert store.event_types().count("review.approved") == 1


TIMED = """
nodes:
  - id: review
    timeout: 50ms
    task: {type: approval{on_timeout}}
  - {id: after, startWhen: event:review.completed, task: {type: noop}}
"""


async def test_timeout_fails_the_approval_by_default() -> None:
    orch, store = make(TIMED.replace("{on_timeout}", ""))
    result = await orch.run()
    assert store.event_types() == [
        "pipeline.started",
        "review.waiting",
        "review.failed",
        "after.skipped",
        "pipeline.failed",
    ]
    (failed,) = [e.payload for e in store.events() if e.event_type == "review.failed"]
    assert failed["error_type"] == "ApprovalTimeout"
    assert result.nodes["review"].error == "nobody decided within 0.05s"
    (waiting,) = [e.payload for e in store.events() if e.event_type == "review.waiting"]
    assert waiting["deadline"] is not None


@pytest.mark.parametrize("on_timeout", ["approve", "reject"])
async def test_on_timeout_decides_in_the_name_of_the_timeout(on_timeout: str) -> None:
    orch, store = make(TIMED.replace("{on_timeout}", f", onTimeout: {on_timeout}"))
    result = await orch.run()
    decided = "review.approved" if on_timeout == "approve" else "review.rejected"
    assert store.event_types() == [
        "pipeline.started",
        "review.waiting",
        decided,
        "review.completed",
        "after.started",
        "after.completed",
        "pipeline.completed",
    ]
    assert result.nodes["review"].outputs["by"] == "timeout"


async def test_stop_when_stops_a_waiting_approval_and_closes_its_attempt() -> None:
    orch, store = await parked(
        """
        nodes:
          - {id: review, stopWhen: "event:external.abort", task: {type: approval}}
          - {id: after, startWhen: event:review.approved, task: {type: noop}}
        """
    )
    orch.post_external_event("abort")
    result = await orch.wait()
    assert store.event_types() == [
        "pipeline.started",
        "review.waiting",
        "external.abort",
        "review.stopped",
        "after.skipped",
        "pipeline.completed",
    ]
    assert result.nodes["review"].status.value == "stopped"
    attempts = [r for r in store.records if type(r).__name__ == "AttemptRecorded"]
    assert [a.status.value for a in attempts] == ["waiting", "stopped"]


async def test_cancel_cancels_a_waiting_approval() -> None:
    orch, store = await parked("nodes: [{id: review, task: {type: approval}}]")
    orch.cancel("no longer needed")
    result = await orch.wait()
    assert store.event_types() == [
        "pipeline.started",
        "review.waiting",
        "review.cancelled",
        "pipeline.cancelled",
    ]
    assert result.status.value == "cancelled"


async def test_a_waiting_approval_holds_no_concurrency_slot() -> None:
    orch, store = make(
        """
        concurrency: 1
        nodes:
          - {id: review, task: {type: approval}}
          - {id: work, task: {type: noop}}
        """
    )
    done = until(orch, "work.completed")
    await orch.start()
    await done
    assert orch.status.value == "waiting"
    orch.decide("review", True, "alice")
    result = await orch.wait()
    assert result.status.value == "completed"
    assert store.event_types().index("work.completed") < store.event_types().index(
        "review.approved"
    )


async def test_inbox_messages_apply_once_and_are_recorded_with_their_outcome() -> None:
    orch, store = await parked(
        """
        nodes:
          - {id: review, task: {type: approval, approvers: [alice]}}
          - {id: go, startWhen: "event:external.go && event:review.approved", task: {type: noop}}
        """,
        inbox_poll_s=0.005,
    )
    eid = orch.execution_id
    refused = store.post_message(eid, MessageKind.APPROVE, "review", {"by": "mallory"})
    event = store.post_message(eid, MessageKind.EVENT, "go", {"n": 1})
    approved = store.post_message(eid, MessageKind.APPROVE, "review", {"by": "alice"})
    result = await orch.wait()
    assert store.event_types() == [
        "pipeline.started",
        "review.waiting",
        "external.go",
        "review.approved",
        "review.completed",
        "go.started",
        "go.completed",
        "pipeline.completed",
    ]
    assert store.applied() == {
        refused: "'mallory' may not decide 'review'; approvers: alice",
        event: None,
        approved: None,
    }
    assert result.status.value == "completed"
    # A message is marked applied in the same unit as the events it caused.
    applied_at = next(
        i for i, r in enumerate(store.records) if getattr(r, "message_id", None) == approved
    )
    approved_at = next(
        i
        for i, r in enumerate(store.records)
        if isinstance(r, EventAppended) and r.event.event_type == "review.approved"
    )
    assert approved_at < applied_at
    assert not any(approved_at < b <= applied_at for b in store.boundaries)


async def test_a_cancel_message_cancels_the_execution() -> None:
    orch, store = await parked("nodes: [{id: review, task: {type: approval}}]", inbox_poll_s=0.005)
    message = store.post_message(
        orch.execution_id, MessageKind.CANCEL, "", {"reason": "changed my mind"}
    )
    result = await orch.wait()
    assert result.status.value == "cancelled"
    assert store.applied() == {message: None}
    (cancelled,) = [e.payload for e in store.events() if e.event_type == "review.cancelled"]
    assert cancelled == {"reason": "changed my mind"}


async def test_resume_keeps_waiting_and_applies_a_decision_posted_while_down() -> None:
    orch, store = await parked(REVIEW, inbox_poll_s=None)
    # The process dies here; a decision arrives while nobody runs the execution.
    resumed_store = InMemoryStateStore()
    resumed_store.records = store.records[: _cut_after(store, "review.waiting")]
    snapshot = await resumed_store.load_execution(orch.execution_id)
    assert {n.node_id: n.state.value for n in snapshot.nodes}["review"] == "waiting"
    orch.cancel("ends this loop's copy; the resume starts from the cut above")
    await orch.wait()
    message = resumed_store.post_message(
        orch.execution_id, MessageKind.APPROVE, "review", {"by": "alice", "comment": "ok"}
    )
    again = Orchestrator(
        program(REVIEW),
        store=resumed_store,
        runner=InlineRunner(),
        artifacts=InMemoryArtifactStore(),
        inputs=snapshot.inputs,
        execution_id=orch.execution_id,
        inbox_poll_s=0.005,
    )
    result = await again.resume(snapshot)
    assert resumed_store.event_types() == [
        "pipeline.started",
        "prepare.started",
        "prepare.completed",
        "review.waiting",
        "pipeline.resumed",
        "review.approved",
        "review.completed",
        "discard.skipped",
        "publish.started",
        "publish.completed",
        "pipeline.completed",
    ]
    assert resumed_store.applied() == {message: None}
    assert result.nodes["review"].attempts == 1
    assert result.nodes["publish"].outputs == {"by": "alice", "note": "ok"}
    check_log_invariants(resumed_store)


def _cut_after(store: InMemoryStateStore, event_type: str) -> int:
    """The first unit boundary after `event_type` was recorded: a durable crash point."""
    at = next(
        i
        for i, r in enumerate(store.records)
        if isinstance(r, EventAppended) and r.event.event_type == event_type
    )
    return min(b for b in store.boundaries if b > at)


async def test_resume_after_the_deadline_passed_applies_the_timeout() -> None:
    spec = TIMED.replace("{on_timeout}", ", onTimeout: reject").replace("50ms", "1h")
    orch, store = await parked(spec, inbox_poll_s=None, clock=lambda: 1000.0)
    orch.cancel("simulated crash")
    await orch.wait()
    resumed_store = InMemoryStateStore()
    resumed_store.records = store.records[: _cut_after(store, "review.waiting")]
    again = Orchestrator(
        program(spec),
        store=resumed_store,
        runner=InlineRunner(),
        artifacts=InMemoryArtifactStore(),
        execution_id=orch.execution_id,
        clock=lambda: 1000.0 + 3601,  # the process was down for longer than the timeout
    )
    result = await again.resume(await resumed_store.load_execution(orch.execution_id))
    assert resumed_store.event_types()[2:] == [
        "pipeline.resumed",
        "review.rejected",
        "review.completed",
        "after.started",
        "after.completed",
        "pipeline.completed",
    ]
    assert result.nodes["review"].outputs["by"] == "timeout"
    assert result.status.value == "completed"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("{type: approval, approvers: alice}", "`approvers` must be a list of names"),
        ("{type: approval, onTimeout: later}", "`onTimeout` must be one of fail | approve"),
        ("{type: approval, mesage: hi}", "unknown field 'mesage'"),
        ("{type: approval, message: '{{ nope.x }}'}", "unknown node 'nope'"),
    ],
)
def test_invalid_approval_tasks_are_load_errors(task: str, message: str) -> None:
    with pytest.raises(DefinitionErrors) as info:
        program(f"nodes: [{{id: review, task: {task}}}]")
    assert message in str(info.value)
    assert "t.yaml:" in str(info.value.issues[0])


def test_an_approval_cannot_use_for_each() -> None:
    with pytest.raises(DefinitionErrors, match="cannot use forEach"):
        program("nodes: [{id: review, forEach: '{{ [1, 2] }}', task: {type: approval}}]")


# --- review findings: ordering of messages, deadlines, leftovers, the poller


async def test_each_message_is_settled_before_the_next_is_applied() -> None:
    orch, store = await parked(
        """
        stopWhen: "event:external.halt"
        nodes:
          - {id: review, task: {type: approval}}
          - {id: ship, startWhen: event:review.approved, task: {type: noop}}
        """,
        inbox_poll_s=0.005,
    )
    halt = store.post_message(orch.execution_id, MessageKind.EVENT, "halt")
    approve = store.post_message(orch.execution_id, MessageKind.APPROVE, "review", {"by": "a"})
    result = await orch.wait()
    assert store.event_types() == [
        "pipeline.started",
        "review.waiting",
        "external.halt",
        "review.stopped",
        "ship.stopped",
        "pipeline.stopped",
    ]
    assert result.status.value == "stopped"
    assert store.applied() == {
        halt: None,
        approve: "the execution ended (stopped) before this request was applied",
    }


async def test_requests_still_pending_at_the_end_are_refused() -> None:
    orch, store = await parked("nodes: [{id: review, task: {type: approval}}]", inbox_poll_s=60)
    late = store.post_message(orch.execution_id, MessageKind.EVENT, "go")
    orch.cancel("operator")
    await orch.wait()
    assert store.applied() == {
        late: "the execution ended (cancelled) before this request was applied"
    }
    assert "external.go" not in store.event_types()


async def test_the_deadline_reads_the_inbox_first_and_honours_a_decision_stored_in_time() -> None:
    spec = TIMED.replace("{on_timeout}", "").replace("50ms", "100ms")
    orch, store = make(spec, inbox_poll_s=60)  # the poll would come far too late
    waiting = until(orch, "review.waiting")
    await orch.start()
    await waiting
    (payload,) = [e.payload for e in store.events() if e.event_type == "review.waiting"]
    in_time = store.post_message(
        orch.execution_id,
        MessageKind.APPROVE,
        "review",
        {"by": "alice"},
        created_at=payload["deadline"] - 0.01,
    )
    result = await orch.wait()
    assert store.applied() == {in_time: None}
    assert result.nodes["review"].outputs["by"] == "alice"
    assert store.event_types()[1:4] == ["review.waiting", "review.approved", "review.completed"]


async def test_a_decision_stored_after_the_deadline_is_refused() -> None:
    spec = TIMED.replace("{on_timeout}", "").replace("50ms", "100ms")
    orch, store = await parked(spec, inbox_poll_s=60)
    (payload,) = [e.payload for e in store.events() if e.event_type == "review.waiting"]
    too_late = store.post_message(
        orch.execution_id,
        MessageKind.APPROVE,
        "review",
        {"by": "alice"},
        created_at=payload["deadline"] + 1,
    )
    result = await orch.wait()
    assert store.applied() == {too_late: "the decision came after the deadline of 'review'"}
    assert result.nodes["review"].status.value == "failed"


async def test_a_cancelled_wait_leaves_the_poller_running() -> None:
    orch, store = await parked("nodes: [{id: review, task: {type: approval}}]", inbox_poll_s=0.005)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(orch.wait(), 0.02)
    store.post_message(orch.execution_id, MessageKind.APPROVE, "review", {"by": "bob"})
    result = await orch.wait()
    assert result.nodes["review"].outputs["by"] == "bob"


async def test_resume_after_the_deadline_applies_a_decision_stored_before_it() -> None:
    spec = TIMED.replace("{on_timeout}", "").replace("50ms", "1h")
    orch, store = await parked(spec, inbox_poll_s=None, clock=lambda: 1000.0)
    orch.cancel("simulated crash")
    await orch.wait()
    resumed_store = InMemoryStateStore()
    resumed_store.records = store.records[: _cut_after(store, "review.waiting")]
    stored = resumed_store.post_message(
        orch.execution_id, MessageKind.APPROVE, "review", {"by": "alice"}, created_at=1500.0
    )
    again = Orchestrator(
        program(spec),
        store=resumed_store,
        runner=InlineRunner(),
        artifacts=InMemoryArtifactStore(),
        execution_id=orch.execution_id,
        clock=lambda: 1000.0 + 7200,  # resumed an hour after the deadline
        inbox_poll_s=60,
    )
    result = await again.resume(await resumed_store.load_execution(orch.execution_id))
    assert resumed_store.applied() == {stored: None}
    assert result.nodes["review"].outputs["by"] == "alice"
    assert result.status.value == "completed"


async def test_a_stop_condition_error_closes_the_waiting_attempt() -> None:
    orch, store = await parked(
        """
        nodes:
          - {id: src, startWhen: "event:external.go", task: {type: noop}, inputBindings: {n: "x"}}
          - {id: review, stopWhen: "{{ src.n + 1 > 2 }}", task: {type: approval}}
        """
    )
    orch.post_external_event("go")
    result = await orch.wait()
    assert result.nodes["review"].status.value == "failed"
    attempts = [r for r in store.records if type(r).__name__ == "AttemptRecorded"]
    review = [(a.status.value, a.error_type) for a in attempts if a.node_id == "review"]
    assert review == [("waiting", None), ("failed", "ExpressionError")]


def test_spec_defaults_timeout_does_not_bound_an_approval() -> None:
    compiled = program(
        """
        defaults: {timeout: 30s}
        nodes:
          - {id: review, task: {type: approval}}
          - {id: work, task: {type: noop}}
          - {id: gate, timeout: 2h, task: {type: approval}}
        """
    )
    timeouts = {n.id: n.definition.timeout_s for n in compiled.nodes}
    assert timeouts == {"review": None, "work": 30.0, "gate": 7200.0}
