"""Resuming an execution from its durable prefix after a crash (DESIGN.md §7).

The event log is replayed into a fresh trigger index (no side effects), node
states and variables are restored from their rows, and then each unfinished
node is reconciled: a node that was running starts a new attempt
(at-least-once, the lost attempt is recorded), a retrying node retries, a
waiting approval waits on with its original deadline, a pending node whose
trigger is now decided starts or is skipped.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from whenflow.domain.errors import BindingError
from whenflow.domain.events import PIPELINE_SOURCE
from whenflow.domain.records import ExecutionSnapshot, ExecutionUpdated
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.engine import cleanup, deadlines
from whenflow.engine.approvals import arm_deadline
from whenflow.engine.each_events import each_run
from whenflow.engine.endings import fail_node
from whenflow.engine.foreach import ITEM_SCOPE_SUFFIX, evaluate_items, fill
from whenflow.engine.runtime import NO_ITEM, ForEachRun, NodeRuntime

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState

LOST = "AttemptLost"
ItemResults = dict[int, Any]


def restore(state: ExecutionState, snapshot: ExecutionSnapshot) -> dict[str, ItemResults]:
    """Put the durable state of `snapshot` into a fresh `state`; no event is published.

    Returns the finished forEach items per node, for `reconcile`.
    """
    state.started_at = snapshot.created_at
    state.pool.system["started_at"] = snapshot.created_at
    state.events = list(snapshot.events)
    state.seq = snapshot.events[-1].seq if snapshot.events else 0

    item_results: dict[str, ItemResults] = {}
    plain = []
    for var in snapshot.variables:
        if var.scope.endswith(ITEM_SCOPE_SUFFIX):
            node_id = var.scope.removesuffix(ITEM_SCOPE_SUFFIX)
            stored = dict(var.value or {})
            item_results.setdefault(node_id, {})[int(var.name)] = state.pool.from_stored_form(
                stored
            )
        else:
            plain.append(var)
    state.pool.restore(plain)

    for row in snapshot.nodes:
        rt = state.nodes.get(row.node_id)
        if rt is None:
            continue
        rt.state, rt.attempt = row.state, row.attempts
        rt.started_at, rt.finished_at = row.started_at, row.finished_at
        rt.error, rt.reason = row.error, row.reason
    state.non_terminal = sum(1 for rt in state.node_list if not rt.state.is_terminal)
    state.waiting_nodes = sum(1 for rt in state.node_list if rt.state is NodeState.WAITING)
    lost = Counter((a.node_id, a.item_index) for a in snapshot.attempts if a.error_type == LOST)
    for rt in state.node_list:
        rt.lost_attempts = lost[(rt.id, NO_ITEM)]
    return item_results


def reconcile(
    state: ExecutionState,
    snapshot: ExecutionSnapshot,
    item_results: dict[str, ItemResults],
) -> None:
    """The unit of work that continues a restored execution: `pipeline.resumed`, then
    a new attempt for what was running, a retry for what was retrying, and the
    decisions of pending nodes whose triggers the replay already decided."""
    state.publish(
        "pipeline.resumed",
        PIPELINE_SOURCE,
        {"previous_status": str(snapshot.status), "last_seq": state.seq},
    )
    state.status = ExecutionStatus.RUNNING
    state.records.append(
        ExecutionUpdated(state.execution_id, ExecutionStatus.RUNNING, state.clock())
    )
    attempts_by_item: dict[tuple[str, int], int] = {}
    running_items: dict[str, list[int]] = {}
    for a in snapshot.attempts:
        if a.status is NodeState.RUNNING or a.status is NodeState.WAITING:
            state.attempt_starts[(a.node_id, a.item_index, a.attempt)] = a.started_at
        key = (a.node_id, a.item_index)
        attempts_by_item[key] = max(attempts_by_item.get(key, 0), a.attempt)
        if a.item_index != NO_ITEM and a.status is NodeState.RUNNING:
            running_items.setdefault(a.node_id, []).append(a.item_index)

    for rt in state.nodes.values():
        if rt.state is NodeState.RUNNING:
            if rt.program.for_each is not None or rt.program.each is not None:
                failed_items = {
                    int(e.payload["index"]): str(e.payload.get("message", ""))
                    for e in snapshot.events
                    if e.event_type == f"{rt.id}.item_failed"
                }
                _resume_foreach(
                    state,
                    rt,
                    item_results.get(rt.id, {}),
                    failed_items,
                    attempts_by_item,
                    running_items,
                )
            else:
                state.attempt_row(
                    rt.id,
                    NO_ITEM,
                    rt.attempt,
                    NodeState.FAILED,
                    LOST,
                    "the process running this attempt stopped; starting a new attempt",
                )
                rt.lost_attempts += 1
                if rt.program.child is not None:
                    rt.adopt_child = _started_child(snapshot, rt.id, rt.attempt)
                rt.queued = True
                state.enqueue(rt.id)
        elif rt.state is NodeState.RETRYING:
            rt.queued = True
            state.enqueue(rt.id)
        elif rt.state is NodeState.WAITING:
            arm_deadline(state, rt, _parked_deadline(snapshot, rt.id))
        elif rt.state is NodeState.PENDING:
            if rt.start_tree.value is not None:
                state.decisions.append((rt.start_tree, rt.start_tree.value))
            if rt.stop_tree is not None and rt.stop_tree.value is True:
                state.decisions.append((rt.stop_tree, True))
        if (
            rt.state in (NodeState.RUNNING, NodeState.WAITING)
            and rt.stop_tree is not None
            and rt.stop_tree.value is True
        ):
            state.decisions.append((rt.stop_tree, True))
    if state.pipeline_stop is not None and state.pipeline_stop.value is True:
        state.decisions.append((state.pipeline_stop, True))
    cleanup.resume(state)  # the finally phase, if it had begun
    deadlines.arm(state)  # counted from the stored starts: what is overdue ends now


def _started_child(snapshot: ExecutionSnapshot, node_id: str, attempt: int) -> str | None:
    """The child execution that attempt `attempt` started or adopted, if it got that far."""
    names = (f"{node_id}.child_started", f"{node_id}.child_resumed")
    for event in reversed(snapshot.events):
        if event.event_type in names and event.payload.get("attempt") == attempt:
            return str(event.payload["execution_id"])
    return None


def _parked_deadline(snapshot: ExecutionSnapshot, node_id: str) -> float | None:
    """The deadline a waiting approval published when it parked: the timeout keeps its clock."""
    waiting = f"{node_id}.waiting"
    for event in reversed(snapshot.events):
        if event.event_type == waiting:
            deadline = event.payload.get("deadline")
            return None if deadline is None else float(deadline)
    return None


def _resume_foreach(
    state: ExecutionState,
    rt: NodeRuntime,
    results: dict[int, dict[str, object]],
    failed: dict[int, str],
    attempts: dict[tuple[str, int], int],
    running_items: dict[str, list[int]],
) -> None:
    if rt.program.each is not None:
        run = each_run(state, rt, state.events)  # the events are the durable log's
    else:
        try:
            run = ForEachRun(items=evaluate_items(state, rt))
        except BindingError as exc:
            fail_node(state, rt, type(exc).__name__, str(exc))
            return
    items = run.items
    run.results.update(results)
    run.failed.update(failed)  # failed for good before the crash: not run again
    for index in range(len(items)):
        if (rt.id, index) in attempts:
            run.attempts[index] = attempts[(rt.id, index)]
    for index in running_items.get(rt.id, []):
        if index not in results:
            state.attempt_row(
                rt.id,
                index,
                run.attempts.get(index, 1),
                NodeState.FAILED,
                LOST,
                "the process running this item stopped; starting a new attempt",
            )
    rt.foreach = run
    fill(state, rt)
