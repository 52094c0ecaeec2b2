"""How nodes and executions end: stop, cancel, quiescence, and the final status (DESIGN.md §5).

Part of the dispatcher, like `attempts` and `foreach`: these functions run
inside its units of work and act on its `ExecutionState`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from whenflow.domain.events import PIPELINE_SOURCE
from whenflow.domain.records import ExecutionUpdated
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.dsl.compiled_values import contains_missing, render_value
from whenflow.dsl.templates import TemplateEvaluationError
from whenflow.engine.ending_scope import final_status
from whenflow.engine.runtime import NO_ITEM, NodeRuntime
from whenflow.engine.trigger_eval import TriggerTree
from whenflow.engine.trigger_index import unknown_external

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState


def cancel_work(state: ExecutionState, rt: NodeRuntime) -> None:
    """Cancel whatever of this node is running or scheduled."""
    if rt.task is not None:
        rt.task.cancel()
        rt.task = None
        state.running -= 1
    state.cancel_timer(rt.retry_timer)
    rt.retry_timer = None
    if rt.deadline_timer is not None:
        rt.deadline_timer.cancel()
        rt.deadline_timer = None
    run = rt.foreach
    if run is not None:
        for task in run.running.values():
            task.cancel()
            state.running -= 1
        run.running.clear()
        for handle in run.retry_timers.values():
            state.cancel_timer(handle)
        run.retry_timers.clear()
    rt.queued = False  # its queue entries are dropped lazily: admission skips ended nodes


def close_running_attempts(
    state: ExecutionState,
    rt: NodeRuntime,
    status: NodeState,
    reason: str,
    error_type: str | None = None,
) -> None:
    """Final rows for the attempts (or the waiting approval) a stop, cancel or
    failed condition is about to end."""
    if rt.state is not NodeState.RUNNING and rt.state is not NodeState.WAITING:
        return
    error_type = error_type or status.value.title()
    if rt.foreach is None:
        state.attempt_row(rt.id, NO_ITEM, rt.attempt, status, error_type, reason)
        return
    for index in sorted(rt.foreach.running):
        attempt = rt.foreach.attempts.get(index, 1)
        state.attempt_row(rt.id, index, attempt, status, error_type, reason)


def fail_node(state: ExecutionState, rt: NodeRuntime, error_type: str, message: str) -> None:
    """End a node as failed; with `failFast`, a failure that counts ends the execution."""
    rt.error = message
    state.terminal(
        rt,
        NodeState.FAILED,
        {"error_type": error_type, "message": message, "attempt": rt.attempt},
    )
    definition = rt.program.definition
    if (
        not definition.allow_failure
        and not definition.is_finally
        and state.definition.fail_fast
        and state.ending is None
    ):
        end_all(state, ExecutionStatus.FAILED, f"failFast: node {rt.id!r} failed")


def condition_failed(state: ExecutionState, tree: TriggerTree, message: str) -> None:
    """A trigger's condition raised: the pipeline's stopWhen fails the execution, a
    node's startWhen or stopWhen fails that node."""
    if tree.kind == "pipeline_stop":
        if state.ending is None:
            state.error = f"pipeline stopWhen failed: {message}"
            end_all(state, ExecutionStatus.FAILED, state.error)
        return
    rt = state.nodes[tree.owner]
    if rt.state.is_terminal:
        return
    field = "startWhen" if tree.kind == "start" else "stopWhen"
    error = f"{field} {message}"
    close_running_attempts(state, rt, NodeState.FAILED, error, "ExpressionError")
    cancel_work(state, rt)
    fail_node(state, rt, "ExpressionError", error)


def skip_node(state: ExecutionState, rt: NodeRuntime, reason: str) -> None:
    rt.reason = reason
    state.terminal(rt, NodeState.SKIPPED, {"reason": reason})


def stop_node(state: ExecutionState, rt: NodeRuntime, reason: str) -> None:
    close_running_attempts(state, rt, NodeState.STOPPED, reason)
    cancel_work(state, rt)
    rt.reason = reason
    state.terminal(rt, NodeState.STOPPED, {"reason": reason})


def end_all(state: ExecutionState, status: ExecutionStatus, reason: str) -> None:
    """Stop (stopWhen) or cancel (failFast, cancel, timeout) every node that has not
    finished, except the finally nodes: they run next (`cleanup`)."""
    state.ending = status
    state.ending_reason = reason
    if status is ExecutionStatus.FAILED and state.error is None:
        state.error = reason
    target = NodeState.STOPPED if status is ExecutionStatus.STOPPED else NodeState.CANCELLED
    for rt in state.nodes.values():
        if rt.state.is_terminal or rt.program.definition.is_finally:
            continue
        close_running_attempts(state, rt, target, reason)
        cancel_work(state, rt)
        rt.reason = reason
        state.terminal(rt, target, {"reason": reason})


def skip_one_unsatisfiable(state: ExecutionState) -> bool:
    """Quiescence: nothing runs or is scheduled, so an undecided node can never start.

    While any node still waits for an `external.*` event, nothing is skipped:
    that event may decide the others too, so the execution is `waiting` instead.
    Nodes are skipped one at a time in definition order (each skip may decide
    others); a cursor keeps the whole sequence linear, since no node before the
    last one skipped can become undecided again.
    """
    for owner in state.index.external_leaves:
        rt = state.nodes.get(owner)
        if rt is not None and rt.state is NodeState.PENDING and unknown_external([rt.start_tree]):
            return False
    nodes = state.node_list
    while state.quiescence_cursor < len(nodes):
        rt = nodes[state.quiescence_cursor]
        state.quiescence_cursor += 1
        if rt.state is NodeState.PENDING and not rt.queued and not rt.program.definition.is_finally:
            reason = "unsatisfiable: the execution is quiescent and startWhen is still undecided"
            skip_node(state, rt, reason)
            return True
    return False


def set_waiting(state: ExecutionState) -> None:
    if state.status is not ExecutionStatus.WAITING:
        state.status = ExecutionStatus.WAITING
        state.records.append(ExecutionUpdated(state.execution_id, state.status, state.clock()))


def finish(state: ExecutionState) -> None:
    status, state.error = final_status(state)
    if status is ExecutionStatus.COMPLETED:
        try:
            state.outputs = {}
            for key, compiled in state.program.outputs.items():
                reads = state.mask.reads
                value = render_value(compiled, state.pool.context)
                if state.mask.reads != reads:  # derived from a secret: a secret too
                    state.mask.reveal_derived(value)
                state.outputs[key] = None if contains_missing(value) else value
            json.dumps(state.outputs)
        except TemplateEvaluationError as exc:
            status = ExecutionStatus.FAILED
            state.error = f"pipeline outputs: {exc}"
        except (TypeError, ValueError) as exc:
            status = ExecutionStatus.FAILED
            state.error = f"pipeline outputs must be JSON data: {exc}"
            state.outputs = {}
    state.status = status
    for handle in state.within_handles:
        handle.cancel()
    state.within_handles.clear()
    now = state.clock()
    state.publish(
        f"pipeline.{status.value}", PIPELINE_SOURCE, {"error": state.error} if state.error else {}
    )
    state.records.append(
        ExecutionUpdated(state.execution_id, status, now, now, dict(state.outputs), state.error)
    )
    if state.done is not None and not state.done.done():
        state.done.set_result(None)
