"""Settling a unit of work: what follows from its changes (DESIGN.md §5).

After a handler ran, `settle` drains the trigger decisions it caused (start,
skip or stop nodes, a pipeline's stopWhen, failed conditions), admits ready
attempts within the concurrency limit, and sets the execution's status:
finished when every node is terminal, waiting when only approvals or
external events can move it, running otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from whenflow.domain.records import ExecutionUpdated
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.engine.approvals import park
from whenflow.engine.attempts import launch
from whenflow.engine.endings import (
    cancel_work,
    close_running_attempts,
    end_all,
    fail_node,
    finish,
    set_waiting,
    skip_node,
    skip_one_unsatisfiable,
    stop_node,
)
from whenflow.engine.foreach import launch_item, start_foreach
from whenflow.engine.runtime import NO_ITEM, NodeRuntime

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState
    from whenflow.engine.trigger_eval import TriggerTree


def settle(s: ExecutionState) -> None:
    """Decide, admit and finish until nothing more follows from the unit's changes."""
    while True:
        _drain_decisions(s)
        _admit_ready(s)
        if s.decisions or s.condition_errors:
            continue
        if s.status.is_terminal:
            return
        if s.non_terminal == 0:
            finish(s)
            return
        if s.running or s.timers or s.ready:
            if s.status is ExecutionStatus.WAITING:  # an event or decision restarted work
                s.status = ExecutionStatus.RUNNING
                s.records.append(ExecutionUpdated(s.execution_id, s.status, s.clock()))
            return
        if s.waiting_nodes:  # only approvals are left: nothing is unsatisfiable yet
            set_waiting(s)
            return
        if not skip_one_unsatisfiable(s):
            set_waiting(s)
            return


def _drain_decisions(s: ExecutionState) -> None:
    while s.decisions or s.condition_errors:
        if s.condition_errors:
            tree, message = s.condition_errors.popleft()
            _condition_failed(s, tree, message)
            continue
        tree, value = s.decisions.popleft()
        if tree.kind == "pipeline_stop":
            if value and s.ending is None:
                end_all(s, ExecutionStatus.STOPPED, f"pipeline stopWhen: {tree.explain()}")
            continue
        rt = s.nodes[tree.owner]
        if rt.state.is_terminal or s.ending is not None:
            continue
        if tree.kind == "start":
            if rt.state is NodeState.PENDING and not rt.queued:
                if value:
                    _request_start(s, rt)
                else:
                    skip_node(s, rt, f"startWhen is false: {tree.explain()}")
        elif value:
            stop_node(s, rt, f"stopWhen: {tree.explain()}")


def _condition_failed(s: ExecutionState, tree: TriggerTree, message: str) -> None:
    if tree.kind == "pipeline_stop":
        if s.ending is None:
            s.error = f"pipeline stopWhen failed: {message}"
            end_all(s, ExecutionStatus.FAILED, s.error)
        return
    rt = s.nodes[tree.owner]
    if rt.state.is_terminal:
        return
    field = "startWhen" if tree.kind == "start" else "stopWhen"
    error = f"{field} {message}"
    close_running_attempts(s, rt, NodeState.FAILED, error, "ExpressionError")
    cancel_work(s, rt)
    fail_node(s, rt, "ExpressionError", error)


def _request_start(s: ExecutionState, rt: NodeRuntime) -> None:
    if rt.program.approval is not None:
        park(s, rt)  # takes no concurrency slot: it only waits
        return
    if rt.program.for_each is not None:
        start_foreach(s, rt)
        return
    rt.queued = True
    s.enqueue(rt.id)


def _admit_ready(s: ExecutionState) -> None:
    if s.admission_held:
        return
    while s.ready and s.has_slot():
        node_id, index = s.ready.popleft()
        rt = s.nodes[node_id]
        rt.queued = False
        if rt.state.is_terminal or s.ending is not None:
            continue
        if index == NO_ITEM:
            launch(s, rt)
        else:
            launch_item(s, rt, index)
