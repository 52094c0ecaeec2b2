"""Finally nodes: cleanup that runs however the execution ends (DESIGN.md §5, Cleanup).

Part of the dispatcher, like `endings`: these functions run inside its units
of work and act on its `ExecutionState`.

- A node with `finally: true` does not start before the rest is done: once
  every other node has ended, or at once when the execution ends early
  (failFast, a pipeline `stopWhen`, `spec.timeout`, a cancel: `end_all` spares
  the finally nodes), `begin_finally` publishes `pipeline.ending` with the
  `ending` scope (`ending_scope.ending_view`) and decides each finally node's
  start: `event:pipeline.ending`, ANDed with its own `startWhen` if it has one,
  evaluated then over the final events and variables.
- After a cancel or the pipeline timeout the finally nodes are bounded: those
  still running `finallyGrace` (default 60s) later are cancelled, and a second
  cancel cancels them at once. A cancelled execution always ends.
- The phase is durable through `pipeline.ending`: `resume` restores the ending
  from it and starts again what had not finished.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from whenflow.domain.durations import format_duration
from whenflow.domain.events import PIPELINE_SOURCE
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.dsl.finally_checks import ENDING_EVENT
from whenflow.dsl.templates import ENDING_SCOPE, Namespace
from whenflow.engine.ending_scope import ending_view
from whenflow.engine.endings import cancel_work, close_running_attempts, end_all
from whenflow.engine.runtime import NodeRuntime

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState


def begin_finally(state: ExecutionState) -> bool:
    """Start the finally phase if it is due (every other node has ended); True if it began."""
    if state.finally_begun or not state.finally_nodes:
        return False
    left = sum(1 for rt in state.finally_nodes if not rt.state.is_terminal)
    if state.non_terminal != left:
        return False
    state.finally_begun = True
    if left == 0:  # every finally node was stopped before it could start
        return False
    view = ending_view(state)
    state.pool.context[ENDING_SCOPE] = Namespace(ENDING_SCOPE, view)
    payload = {**view, "early": state.ending is not None, "bounded_by": state.finally_bound}
    state.publish(ENDING_EVENT, PIPELINE_SOURCE, payload)
    _decide_starts(state)
    return True


def _decide_starts(state: ExecutionState) -> None:
    """Settle each pending finally node's start tree over the events and variables now."""
    for rt in state.finally_nodes:
        if rt.state is not NodeState.PENDING or rt.queued:
            continue
        tree = rt.start_tree
        if tree.value is not None:
            state.decisions.append((tree, tree.value))
            continue
        for leaf in tree.event_leaves:
            leaf.settle(any(fnmatchcase(e.event_type, leaf.pattern) for e in state.events))
        for cond in tree.condition_leaves:
            if cond.value is None:
                state.evaluate_condition(cond)


def bound(state: ExecutionState, cause: str) -> None:
    """Give the finally nodes `finallyGrace` from now; those still running then are cancelled."""
    if state.finally_bound is not None or not state.finally_nodes:
        return
    state.finally_bound = cause
    grace = state.definition.finally_grace_s
    reason = f"finallyGrace {format_duration(grace)} passed after the {cause}"
    assert state.loop is not None
    handle = state.loop.call_later(grace, state.run_unit, cut_finally, state, reason)
    state.within_handles.append(handle)  # cancelled when the execution ends


def cut_finally(state: ExecutionState, reason: str) -> None:
    """Cancel every finally node that has not ended."""
    for rt in state.finally_nodes:
        if not rt.state.is_terminal:
            _cancel_node(state, rt, reason)


def _cancel_node(state: ExecutionState, rt: NodeRuntime, reason: str) -> None:
    close_running_attempts(state, rt, NodeState.CANCELLED, reason)
    cancel_work(state, rt)
    rt.reason = reason
    state.terminal(rt, NodeState.CANCELLED, {"reason": reason})


def cancel(state: ExecutionState, reason: str) -> str | None:
    """A cancel request: the first ends the execution (finally nodes still run, bounded),
    one while finally nodes run ends them at once. Returns why it was refused, or None."""
    if state.ending is None:
        end_all(state, ExecutionStatus.CANCELLED, reason)
        bound(state, "cancel")
        return None
    if all(rt.state.is_terminal for rt in state.finally_nodes):
        return f"the execution is already ending ({state.ending})"
    if state.finally_bound is None:  # ending after a failure or a stopWhen: grace first
        bound(state, "cancel")
    else:
        cut_finally(state, f"cancelled again while finally nodes ran: {reason}")
    return None


def resume(state: ExecutionState) -> None:
    """After a crash: restore the finally phase from `pipeline.ending`, if it had begun."""
    found = next((e for e in reversed(state.events) if e.event_type == ENDING_EVENT), None)
    if found is None:
        return
    payload = found.payload
    state.finally_begun = True
    view = {k: payload.get(k) for k in ("status", "reason", "failed")}
    state.pool.context[ENDING_SCOPE] = Namespace(ENDING_SCOPE, view)
    if payload.get("early"):
        state.ending = ExecutionStatus(str(payload["status"]))
        state.ending_reason = str(payload.get("reason") or "")
        if state.ending is ExecutionStatus.FAILED and state.error is None:
            state.error = state.ending_reason
    if payload.get("bounded_by"):
        bound(state, str(payload["bounded_by"]))
    _decide_starts(state)
