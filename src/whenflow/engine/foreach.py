"""forEach: one task attempt per item, at most `maxParallel` at a time (DESIGN.md §5).

The node is `running` while its items run; each item has its own attempts
and retries, publishes `<node>.item_completed` / `<node>.item_failed` with its
index, and the node's output `results` keeps input order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from whenflow.domain.definitions import OnItemError
from whenflow.domain.errors import BindingError, error_message, retry_hint
from whenflow.domain.param_types import type_name
from whenflow.domain.records import VariableWritten
from whenflow.domain.states import NodeState
from whenflow.domain.task_io import TaskResult
from whenflow.domain.variables import Variable
from whenflow.dsl.compiled_values import contains_missing, render_value
from whenflow.dsl.templates import TemplateEvaluationError
from whenflow.engine.attempts import (
    accept_outputs,
    output_key_prefix,
    render_inputs,
    settle,
    spawn,
    system_view,
)
from whenflow.engine.deadlines import arm_node
from whenflow.engine.endings import cancel_work, close_running_attempts, fail_node
from whenflow.engine.runtime import ForEachRun, NodeRuntime
from whenflow.engine.variable_pool import OutputError

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState

ITEM_SCOPE_SUFFIX = "#item"


def evaluate_items(state: ExecutionState, rt: NodeRuntime) -> list[Any]:
    """The forEach list; raises BindingError if it is missing or not a list."""
    assert rt.program.for_each is not None
    reads = state.mask.reads
    try:
        items = render_value(rt.program.for_each, state.pool.context)
    except TemplateEvaluationError as exc:
        raise BindingError(rt.id, "forEach", str(exc)) from None
    if state.mask.reads != reads:
        state.mask.reveal_derived(items)
    if contains_missing(items):
        raise BindingError(rt.id, "forEach", "reads a value that was never written")
    if not isinstance(items, list | tuple):
        raise BindingError(rt.id, "forEach", f"must give a list, got {type_name(items)}")
    return list(items)


def start_foreach(state: ExecutionState, rt: NodeRuntime) -> None:
    try:
        items = evaluate_items(state, rt)
    except BindingError as exc:
        rt.attempt = 1
        fail_node(state, rt, type(exc).__name__, str(exc))
        return
    state.move(rt, NodeState.RUNNING)
    rt.attempt = 1
    rt.started_at = state.clock()
    rt.foreach = ForEachRun(items=items)
    state.node_row(rt)
    state.publish(f"{rt.id}.started", rt.id, {"attempt": 1, "items": len(items)})
    arm_node(state, rt)
    fill(state, rt)


def fill(state: ExecutionState, rt: NodeRuntime) -> None:
    """Queue items while under maxParallel; complete the node when all are done."""
    run = rt.foreach
    assert run is not None
    limit = rt.program.definition.max_parallel or len(run.items) or 1
    while run.next_index < len(run.items) and _in_flight(run) < limit:
        index = run.next_index
        run.next_index += 1
        if index in run.results or index in run.failed:
            continue  # finished before a crash; a resumed execution keeps its outcome
        run.queued.add(index)
        state.enqueue(rt.id, index)
    while run.pending_retries and _in_flight(run) < limit:
        index = run.pending_retries.pop(0)
        run.queued.add(index)
        state.enqueue(rt.id, index)
    if run.finished:
        _complete(state, rt, run)


def _in_flight(run: ForEachRun) -> int:
    return len(run.running) + len(run.queued)


def launch_item(state: ExecutionState, rt: NodeRuntime, index: int) -> None:
    run = rt.foreach
    assert run is not None
    run.queued.discard(index)
    attempt = run.attempts.get(index, 0) + 1
    run.attempts[index] = attempt
    item = run.items[index]
    context = state.pool.overlay(
        {run.scope: item, "index": index, "system": system_view(state, attempt, (item, index))}
    )
    try:
        inputs, config = render_inputs(rt, context, state.mask)
    except BindingError as exc:
        _item_failed(state, rt, run, index, attempt, exc, retry=False)
        return
    state.attempt_row(rt.id, index, attempt, NodeState.RUNNING)
    if run.scope != "item":  # an `each:` instance: its start and its event are in the log
        state.publish(
            f"{rt.id}.item_started",
            rt.id,
            {"index": index, "attempt": attempt, "event_seq": item["seq"]},
        )
    run.running[index] = spawn(
        state, rt, attempt, index, inputs, config, on_done=_item_attempt_done
    )


def _item_attempt_done(
    state: ExecutionState, rt: NodeRuntime, attempt: int, index: int | None, outcome: Any
) -> None:
    if settle(state, rt, attempt, index):
        assert index is not None
        item_done(state, rt, index, attempt, outcome)


def item_done(
    state: ExecutionState, rt: NodeRuntime, index: int, attempt: int, outcome: Any
) -> None:
    run = rt.foreach
    assert run is not None
    run.running.pop(index, None)
    if isinstance(outcome, TaskResult):
        try:
            values, variables = accept_outputs(
                state, rt, outcome.outputs, output_key_prefix(state, rt.id, index), item=True
            )
        except OutputError as exc:
            outcome = exc
        else:
            run.results[index] = values
            stored = state.pool.stored_form(variables)
            state.records.append(
                VariableWritten(
                    state.execution_id,
                    Variable(
                        rt.id + ITEM_SCOPE_SUFFIX, str(index), stored, "object", state.clock()
                    ),
                )
            )
            state.attempt_row(rt.id, index, attempt, NodeState.COMPLETED)
            state.publish(f"{rt.id}.item_completed", rt.id, {"index": index, "attempt": attempt})
            fill(state, rt)
            return
    _item_failed(state, rt, run, index, attempt, outcome, retry=True)


def _item_failed(
    state: ExecutionState,
    rt: NodeRuntime,
    run: ForEachRun,
    index: int,
    attempt: int,
    error: BaseException,
    *,
    retry: bool,
) -> None:
    error_type = type(error).__name__
    message = error_message(error)
    state.attempt_row(rt.id, index, attempt, NodeState.FAILED, error_type, message)
    policy = rt.program.definition.retry
    if retry and attempt < policy.max_attempts and policy.retries(error_type):
        delay = policy.delay_after(attempt, retry_hint(error))
        state.publish(
            f"{rt.id}.retrying",
            rt.id,
            {
                "index": index,
                "attempt": attempt,
                "delay": delay,
                "error_type": error_type,
                "message": message,
            },
        )
        run.retry_timers[index] = state.call_later(delay, _retry_due, state, rt, index)
        return
    run.failed[index] = message
    state.publish(
        f"{rt.id}.item_failed",
        rt.id,
        {"index": index, "attempt": attempt, "error_type": error_type, "message": message},
    )
    if rt.program.definition.on_item_error is OnItemError.FAIL:
        close_running_attempts(state, rt, NodeState.CANCELLED, f"item {index} failed")
        cancel_work(state, rt)
        fail_node(state, rt, error_type, f"item {index} failed: {message}")
        return
    fill(state, rt)


def _retry_due(state: ExecutionState, rt: NodeRuntime, index: int) -> None:
    run = rt.foreach
    if run is None or rt.state is not NodeState.RUNNING:
        return
    run.retry_timers.pop(index, None)
    run.pending_retries.append(index)
    fill(state, rt)


def _complete(state: ExecutionState, rt: NodeRuntime, run: ForEachRun) -> None:
    mode = rt.program.definition.on_item_error
    results: list[Any] = []
    for i in range(len(run.items)):
        if i in run.results:
            results.append(dict(run.results[i]))
        elif mode is OnItemError.CONTINUE:
            results.append(None)
    values, variables = state.pool.store_outputs(
        rt.id, {"results": results}, key_prefix=f"{state.execution_id}/{rt.id}", at=state.clock()
    )
    state.records.extend(VariableWritten(state.execution_id, v) for v in variables)
    state.pool.publish(rt.id, values)
    state.terminal(
        rt,
        NodeState.COMPLETED,
        {"attempt": rt.attempt, "items": len(run.items), "failed_items": sorted(run.failed)},
    )
