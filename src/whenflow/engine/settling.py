"""Settling a unit of work: what the dispatcher does after every handler (DESIGN.md §5, §7).

A handler's moves leave trigger decisions behind; `settle` turns them into
starts, skips and stops, admits queued attempts under `concurrency`, begins
the finally nodes, and ends the execution (`finish`) or marks it waiting when
nothing more can happen, until a unit leaves nothing to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from whenflow.domain.records import ExecutionUpdated
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.engine.approvals import park
from whenflow.engine.attempts import launch
from whenflow.engine.cleanup import begin_finally
from whenflow.engine.each_events import start_items
from whenflow.engine.ending_scope import closed_to
from whenflow.engine.endings import (
    condition_failed,
    end_all,
    finish,
    set_waiting,
    skip_node,
    skip_one_unsatisfiable,
    stop_node,
)
from whenflow.engine.foreach import launch_item
from whenflow.engine.runtime import NO_ITEM, NodeRuntime

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState


def settle(s: ExecutionState) -> None:
    """Settle a unit's consequences: decide triggers, admit work, finish or wait."""
    while True:
        drain_decisions(s)
        admit_ready(s)
        if s.decisions or s.condition_errors or begin_finally(s):
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


def drain_decisions(s: ExecutionState) -> None:
    """Turn the trigger decisions (and condition errors) queued so far into moves."""
    while s.decisions or s.condition_errors:
        if s.condition_errors:
            tree, message = s.condition_errors.popleft()
            condition_failed(s, tree, message)
            continue
        tree, value = s.decisions.popleft()
        if tree.kind == "pipeline_stop":
            if value and s.ending is None:
                end_all(s, ExecutionStatus.STOPPED, f"pipeline stopWhen: {tree.explain()}")
            continue
        rt = s.nodes[tree.owner]
        if rt.state.is_terminal or closed_to(s, rt):
            continue
        if tree.kind == "start":
            if rt.state is NodeState.PENDING and not rt.queued:
                if value:
                    request_start(s, rt)
                else:
                    skip_node(s, rt, f"startWhen is false: {tree.explain()}")
        elif value:
            stop_node(s, rt, f"stopWhen: {tree.explain()}")


def request_start(s: ExecutionState, rt: NodeRuntime) -> None:
    """A node whose startWhen became true: park it, start its instances, or queue it."""
    if rt.program.approval is not None:
        park(s, rt)  # takes no concurrency slot: it only waits
        return
    if start_items(s, rt):  # forEach or each: instances, not one task
        return
    rt.queued = True
    s.enqueue(rt.id)


def admit_ready(s: ExecutionState) -> None:
    """Launch queued attempts while `concurrency` has a free slot."""
    if s.admission_held:
        return
    while s.ready and s.has_slot():
        node_id, index = s.ready.popleft()
        rt = s.nodes[node_id]
        rt.queued = False
        if rt.state.is_terminal or closed_to(s, rt):
            continue
        if index == NO_ITEM:
            launch(s, rt)
        else:
            launch_item(s, rt, index)
