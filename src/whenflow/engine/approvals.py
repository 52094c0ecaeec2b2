"""Approval nodes: wait in `waiting` for a person's decision (DESIGN.md §5).

Part of the dispatcher, like `attempts`: these functions run inside its units
of work. An approval node runs no task. When its `startWhen` is true it
*parks*: its bindings and `message` are rendered for whoever decides, the node
moves `pending → waiting` and publishes `<node>.waiting`. A decision (through
the inbox or `Orchestrator.decide`) publishes `<node>.approved` or
`<node>.rejected` and then completes the node with the outputs `decision`,
`approved`, `by`, `at` and `comment`; both ways the node *completes*, so
`event:review.approved` is how a branch follows the decision. The node's
`timeout` fails it (`ApprovalTimeout`), or decides it when `onTimeout` says so.

A waiting approval holds no concurrency slot and no counted timer: when
nothing else runs, the execution is `waiting`, and nodes that depend on the
decision are never skipped as unsatisfiable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from whenflow.domain.errors import BindingError
from whenflow.domain.records import VariableWritten
from whenflow.domain.states import NodeState
from whenflow.dsl.approval import OnTimeout
from whenflow.engine.attempts import accept_outputs, render_inputs, system_view
from whenflow.engine.deadlines import arm_node
from whenflow.engine.endings import fail_node
from whenflow.engine.runtime import NO_ITEM, NodeRuntime

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState

TIMEOUT_DECIDER = "timeout"


def park(state: ExecutionState, rt: NodeRuntime) -> None:
    """Start an approval node: render what the decider sees and wait."""
    spec = rt.program.approval
    assert spec is not None
    attempt = rt.attempt + 1
    try:
        context = state.pool.overlay({"system": system_view(state, attempt)})
        inputs, config = render_inputs(rt, context, state.mask)
    except BindingError as exc:
        rt.attempt = attempt
        fail_node(state, rt, type(exc).__name__, str(exc))
        return
    now = state.clock()
    state.move(rt, NodeState.WAITING)
    rt.attempt = attempt
    rt.started_at = now
    state.node_row(rt)
    state.attempt_row(rt.id, NO_ITEM, attempt, NodeState.WAITING)
    timeout = rt.program.definition.timeout_s
    deadline = None if timeout is None else now + timeout
    state.publish(
        f"{rt.id}.waiting",
        rt.id,
        {
            "attempt": attempt,
            "message": str(config.get("message") or f"approve {rt.id}?"),
            "approvers": list(spec.approvers),
            "inputs": inputs,
            "deadline": deadline,
        },
    )
    arm_deadline(state, rt, deadline)
    arm_node(state, rt)  # a node `deadline`, besides the approval's own timeout


def arm_deadline(state: ExecutionState, rt: NodeRuntime, deadline: float | None) -> None:
    """Schedule the timeout of a waiting approval; not a counted timer (see module doc)."""
    rt.deadline = deadline
    if deadline is None:
        return
    assert state.loop is not None
    delay = max(0.0, deadline - state.clock())
    rt.deadline_timer = state.loop.call_later(delay, _deadline_due, state, rt, rt.attempt)


def _deadline_due(state: ExecutionState, rt: NodeRuntime, attempt: int) -> None:
    """The deadline passed: first read the inbox, where a decision stored in time may
    wait (the process was busy or down), then apply the timeout if still undecided."""
    rt.deadline_timer = None
    read = state.read_inbox
    if read is None:
        state.run_unit(_deadline_passed, state, rt, attempt)
        return

    async def expire() -> None:
        await read()
        state.run_unit(_deadline_passed, state, rt, attempt)

    assert state.loop is not None
    task = state.loop.create_task(expire(), name=f"whenflow-deadline:{rt.id}")
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)


def decide(
    state: ExecutionState,
    rt: NodeRuntime,
    approved: bool,
    by: str,
    comment: str = "",
    decided_at: float | None = None,
) -> str | None:
    """Apply a decision; return why it was refused, or None when it was applied.

    `decided_at` is when the decision was stored (an inbox message): one
    stored after the deadline is refused even if the timeout has not been
    applied yet.
    """
    spec = rt.program.approval
    if spec is None:
        return f"node {rt.id!r} is not an approval"
    if rt.state is not NodeState.WAITING:
        return f"node {rt.id!r} is {rt.state}, not waiting for a decision"
    if decided_at is not None and rt.deadline is not None and decided_at > rt.deadline:
        return f"the decision came after the deadline of {rt.id!r}"
    if not spec.may_decide(by):
        return f"{by!r} may not decide {rt.id!r}; approvers: {', '.join(spec.approvers)}"
    _complete(state, rt, approved, by, comment)
    return None


def _complete(
    state: ExecutionState, rt: NodeRuntime, approved: bool, by: str, comment: str
) -> None:
    if rt.deadline_timer is not None:
        rt.deadline_timer.cancel()
        rt.deadline_timer = None
    now = state.clock()
    decision = "approved" if approved else "rejected"
    outputs = {
        "decision": decision,
        "approved": approved,
        "by": by,
        "at": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "comment": comment,
    }
    values, variables = accept_outputs(state, rt, outputs, f"{state.execution_id}/{rt.id}")
    state.records.extend(VariableWritten(state.execution_id, v) for v in variables)
    state.pool.publish(rt.id, values)
    state.attempt_row(rt.id, NO_ITEM, rt.attempt, NodeState.COMPLETED)
    # The decision event comes first: once the node is terminal, the index
    # counts every event it has not published as never coming.
    state.publish(f"{rt.id}.{decision}", rt.id, {"by": by, "comment": comment})
    state.terminal(rt, NodeState.COMPLETED, {"attempt": rt.attempt, "decision": decision})


def _deadline_passed(state: ExecutionState, rt: NodeRuntime, attempt: int) -> None:
    if rt.state is not NodeState.WAITING or rt.attempt != attempt:
        return
    spec = rt.program.approval
    assert spec is not None
    timeout = rt.program.definition.timeout_s
    message = f"nobody decided within {timeout:g}s"
    if spec.on_timeout is OnTimeout.FAIL:
        state.attempt_row(rt.id, NO_ITEM, attempt, NodeState.FAILED, "ApprovalTimeout", message)
        fail_node(state, rt, "ApprovalTimeout", message)
        return
    _complete(state, rt, spec.on_timeout is OnTimeout.APPROVE, TIMEOUT_DECIDER, message)
