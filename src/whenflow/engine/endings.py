"""How nodes and executions end: stop, cancel, quiescence, and the final status (DESIGN.md §5).

Part of the dispatcher, like `attempts` and `foreach`: these functions run
inside its units of work and mutate its state.
"""

from __future__ import annotations

import json
from collections import deque
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
    rt.queued = False
    if any(r[0] == rt.id for r in orch._ready):
        orch._ready = deque(r for r in orch._ready if r[0] != rt.id)
    if rt.state is NodeState.WAITING:
        orch._waiting_nodes -= 1


def stop_node(orch: Orchestrator, rt: NodeRuntime, reason: str) -> None:
    if rt.state is NodeState.RUNNING:
        orch._attempt_row(rt.id, NO_ITEM, rt.attempt, NodeState.STOPPED, "Stopped", reason)
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
        if rt.state is NodeState.RUNNING:
            orch._attempt_row(rt.id, NO_ITEM, rt.attempt, target, target.value.title(), reason)
        cancel_work(orch, rt)
        rt.reason = reason
        orch._terminal(rt, target, {"reason": reason})


def skip_one_unsatisfiable(orch: Orchestrator) -> bool:
    """Quiescence: nothing runs or is scheduled, so an undecided node can never start.

    While any node still waits for an `external.*` event, nothing is skipped:
    that event may decide the others too, so the execution is `waiting` instead.
    """
    pending = [rt for rt in orch.nodes.values() if rt.state is NodeState.PENDING and not rt.queued]
    if any(unknown_external([rt.start_tree]) for rt in pending):
        return False
    if not pending:
        return False
    reason = "unsatisfiable: the execution is quiescent and startWhen is still undecided"
    orch._skip(pending[0], reason)
    return True


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
