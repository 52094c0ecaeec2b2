"""How nodes and executions end: stop, cancel, quiescence, and the final status (DESIGN.md §5).

Part of the dispatcher, like `attempts` and `foreach`: these functions run
inside its units of work and mutate its state.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from whenflow.domain.events import PIPELINE_SOURCE
from whenflow.domain.records import ExecutionUpdated
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.dsl.compiled_values import contains_missing, render_value
from whenflow.dsl.templates import TemplateEvaluationError
from whenflow.engine.runtime import NO_ITEM, NodeRuntime
from whenflow.engine.trigger_index import unknown_external

if TYPE_CHECKING:
    from whenflow.engine.orchestrator import Orchestrator


def cancel_work(orch: Orchestrator, rt: NodeRuntime) -> None:
    """Cancel whatever of this node is running or scheduled."""
    if rt.task is not None:
        rt.task.cancel()
        rt.task = None
        orch._running -= 1
    orch._cancel_timer(rt.retry_timer)
    rt.retry_timer = None
    run = rt.foreach
    if run is not None:
        for task in run.running.values():
            task.cancel()
            orch._running -= 1
        run.running.clear()
        for handle in run.retry_timers.values():
            orch._cancel_timer(handle)
        run.retry_timers.clear()
    rt.queued = False  # its queue entries are dropped lazily: admission skips ended nodes
    if rt.state is NodeState.WAITING:
        orch._waiting_nodes -= 1


def close_running_attempts(
    orch: Orchestrator, rt: NodeRuntime, status: NodeState, reason: str
) -> None:
    """Final rows for the attempts a stop or cancel is about to end."""
    if rt.state is not NodeState.RUNNING:
        return
    error_type = status.value.title()
    if rt.foreach is None:
        orch._attempt_row(rt.id, NO_ITEM, rt.attempt, status, error_type, reason)
        return
    for index in sorted(rt.foreach.running):
        attempt = rt.foreach.attempts.get(index, 1)
        orch._attempt_row(rt.id, index, attempt, status, error_type, reason)


def stop_node(orch: Orchestrator, rt: NodeRuntime, reason: str) -> None:
    close_running_attempts(orch, rt, NodeState.STOPPED, reason)
    cancel_work(orch, rt)
    rt.reason = reason
    orch._terminal(rt, NodeState.STOPPED, {"reason": reason})


def end_all(orch: Orchestrator, status: ExecutionStatus, reason: str) -> None:
    """Stop (stopWhen) or cancel (failFast, cancel) every node that has not finished."""
    orch._ending = status
    if status is ExecutionStatus.FAILED and orch.error is None:
        orch.error = reason
    target = NodeState.STOPPED if status is ExecutionStatus.STOPPED else NodeState.CANCELLED
    for rt in orch.nodes.values():
        if rt.state.is_terminal:
            continue
        close_running_attempts(orch, rt, target, reason)
        cancel_work(orch, rt)
        rt.reason = reason
        orch._terminal(rt, target, {"reason": reason})


def skip_one_unsatisfiable(orch: Orchestrator) -> bool:
    """Quiescence: nothing runs or is scheduled, so an undecided node can never start.

    While any node still waits for an `external.*` event, nothing is skipped:
    that event may decide the others too, so the execution is `waiting` instead.
    Nodes are skipped one at a time in definition order (each skip may decide
    others); a cursor keeps the whole sequence linear, since no node before the
    last one skipped can become undecided again.
    """
    for owner in orch.index.external_leaves:
        rt = orch.nodes.get(owner)
        if rt is not None and rt.state is NodeState.PENDING and unknown_external([rt.start_tree]):
            return False
    nodes = orch.node_list
    while orch.quiescence_cursor < len(nodes):
        rt = nodes[orch.quiescence_cursor]
        orch.quiescence_cursor += 1
        if rt.state is NodeState.PENDING and not rt.queued:
            reason = "unsatisfiable: the execution is quiescent and startWhen is still undecided"
            orch._skip(rt, reason)
            return True
    return False


def set_waiting(orch: Orchestrator) -> None:
    if orch.status is not ExecutionStatus.WAITING:
        orch.status = ExecutionStatus.WAITING
        orch._records.append(ExecutionUpdated(orch.execution_id, orch.status, orch._clock()))


def finish(orch: Orchestrator) -> None:
    status = orch._ending or ExecutionStatus.COMPLETED
    failed = [
        rt.id
        for rt in orch.nodes.values()
        if rt.state is NodeState.FAILED and not rt.program.definition.allow_failure
    ]
    if status is ExecutionStatus.COMPLETED and failed:
        status = ExecutionStatus.FAILED
        orch.error = orch.error or f"node(s) failed: {', '.join(failed)}"
    if status is ExecutionStatus.COMPLETED:
        try:
            orch.outputs = {
                k: None if contains_missing(v) else v
                for k, v in render_value(orch.program.outputs, orch.pool.context).items()
            }
            json.dumps(orch.outputs)
        except TemplateEvaluationError as exc:
            status = ExecutionStatus.FAILED
            orch.error = f"pipeline outputs: {exc}"
        except (TypeError, ValueError) as exc:
            status = ExecutionStatus.FAILED
            orch.error = f"pipeline outputs must be JSON data: {exc}"
            orch.outputs = {}
    orch.status = status
    for handle in orch._within_handles:
        handle.cancel()
    now = orch._clock()
    orch._publish(
        f"pipeline.{status.value}", PIPELINE_SOURCE, {"error": orch.error} if orch.error else {}
    )
    orch._records.append(
        ExecutionUpdated(orch.execution_id, status, now, now, dict(orch.outputs), orch.error)
    )
    if orch._done is not None and not orch._done.done():
        orch._done.set_result(None)
