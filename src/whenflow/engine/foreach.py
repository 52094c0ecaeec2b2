"""forEach: one task attempt per item, at most `maxParallel` at a time (DESIGN.md §5).

The node is `running` while its items run; each item has its own attempts
and retries, publishes `<node>.item_completed` / `<node>.item_failed` with its
index, and the node's output `results` keeps input order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from whenflow.domain.definitions import OnItemError
from whenflow.domain.errors import BindingError
from whenflow.domain.param_types import type_name
from whenflow.domain.records import VariableWritten
from whenflow.domain.states import NodeState
from whenflow.domain.task_io import TaskResult
from whenflow.domain.variables import Variable
from whenflow.dsl.compiled_values import contains_missing, render_value
from whenflow.dsl.templates import TemplateEvaluationError
from whenflow.engine.attempts import accept_outputs, render_inputs, spawn, system_view
from whenflow.engine.endings import cancel_work, close_running_attempts
from whenflow.engine.runtime import ForEachRun, NodeRuntime
from whenflow.engine.variable_pool import OutputError

if TYPE_CHECKING:
    from whenflow.engine.orchestrator import Orchestrator

ITEM_SCOPE_SUFFIX = "#item"


def evaluate_items(orch: Orchestrator, rt: NodeRuntime) -> list[Any]:
    """The forEach list; raises BindingError if it is missing or not a list."""
    assert rt.program.for_each is not None
    try:
        items = render_value(rt.program.for_each, orch.pool.context)
    except TemplateEvaluationError as exc:
        raise BindingError(rt.id, "forEach", exc.reason) from None
    if contains_missing(items):
        raise BindingError(rt.id, "forEach", "reads a value that was never written")
    if not isinstance(items, list | tuple):
        raise BindingError(rt.id, "forEach", f"must give a list, got {type_name(items)}")
    return list(items)


def start_foreach(orch: Orchestrator, rt: NodeRuntime) -> None:
    try:
        items = evaluate_items(orch, rt)
    except BindingError as exc:
        rt.attempt = 1
        orch._fail(rt, type(exc).__name__, str(exc))
        return
    orch._move(rt, NodeState.RUNNING)
    rt.attempt = 1
    rt.started_at = orch._clock()
    rt.foreach = ForEachRun(items=items)
    orch._node_row(rt)
    orch._publish(f"{rt.id}.started", rt.id, {"attempt": 1, "items": len(items)})
    fill(orch, rt)


def fill(orch: Orchestrator, rt: NodeRuntime) -> None:
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
        orch._ready.append((rt.id, index))
    while run.pending_retries and _in_flight(run) < limit:
        index = run.pending_retries.pop(0)
        run.queued.add(index)
        orch._ready.append((rt.id, index))
    if run.finished:
        _complete(orch, rt, run)


def _in_flight(run: ForEachRun) -> int:
    return len(run.running) + len(run.queued)


def launch_item(orch: Orchestrator, rt: NodeRuntime, index: int) -> None:
    run = rt.foreach
    assert run is not None
    run.queued.discard(index)
    attempt = run.attempts.get(index, 0) + 1
    run.attempts[index] = attempt
    item = run.items[index]
    context = orch.pool.overlay(
        {"item": item, "index": index, "system": system_view(orch, attempt, (item, index))}
    )
    try:
        inputs, config = render_inputs(rt, context)
    except BindingError as exc:
        _item_failed(orch, rt, run, index, attempt, exc, retry=False)
        return
    orch._attempt_row(rt.id, index, attempt, NodeState.RUNNING)
    run.running[index] = spawn(orch, rt, attempt, index, inputs, config)


def item_done(orch: Orchestrator, rt: NodeRuntime, index: int, attempt: int, outcome: Any) -> None:
    run = rt.foreach
    assert run is not None
    run.running.pop(index, None)
    if isinstance(outcome, TaskResult):
        try:
            values, variables = accept_outputs(
                orch, rt, outcome.outputs, f"{orch.execution_id}/{rt.id}/{index}", item=True
            )
        except OutputError as exc:
            outcome = exc
        else:
            run.results[index] = values
            stored = orch.pool.stored_form(variables)
            orch._records.append(
                VariableWritten(
                    orch.execution_id,
                    Variable(
                        rt.id + ITEM_SCOPE_SUFFIX, str(index), stored, "object", orch._clock()
                    ),
                )
            )
            orch._attempt_row(rt.id, index, attempt, NodeState.COMPLETED)
            orch._publish(f"{rt.id}.item_completed", rt.id, {"index": index, "attempt": attempt})
            fill(orch, rt)
            return
    _item_failed(orch, rt, run, index, attempt, outcome, retry=True)


def _item_failed(
    orch: Orchestrator,
    rt: NodeRuntime,
    run: ForEachRun,
    index: int,
    attempt: int,
    error: BaseException,
    *,
    retry: bool,
) -> None:
    error_type = type(error).__name__
    message = str(error) or error_type
    orch._attempt_row(rt.id, index, attempt, NodeState.FAILED, error_type, message)
    policy = rt.program.definition.retry
    if retry and attempt < policy.max_attempts and policy.retries(error_type):
        delay = policy.delay_after(attempt)
        orch._publish(
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
        run.retry_timers[index] = orch._call_later(delay, _retry_due, orch, rt, index)
        return
    run.failed[index] = message
    orch._publish(
        f"{rt.id}.item_failed",
        rt.id,
        {"index": index, "attempt": attempt, "error_type": error_type, "message": message},
    )
    if rt.program.definition.on_item_error is OnItemError.FAIL:
        close_running_attempts(orch, rt, NodeState.CANCELLED, f"item {index} failed")
        cancel_work(orch, rt)
        orch._fail(rt, error_type, f"item {index} failed: {message}")
        return
    fill(orch, rt)


def _retry_due(orch: Orchestrator, rt: NodeRuntime, index: int) -> None:
    run = rt.foreach
    if run is None or rt.state is not NodeState.RUNNING:
        return
    run.retry_timers.pop(index, None)
    run.pending_retries.append(index)
    fill(orch, rt)


def _complete(orch: Orchestrator, rt: NodeRuntime, run: ForEachRun) -> None:
    mode = rt.program.definition.on_item_error
    results: list[Any] = []
    for i in range(len(run.items)):
        if i in run.results:
            results.append(dict(run.results[i]))
        elif mode is OnItemError.CONTINUE:
            results.append(None)
    values, variables = orch.pool.store_outputs(
        rt.id, {"results": results}, key_prefix=f"{orch.execution_id}/{rt.id}", at=orch._clock()
    )
    orch._records.extend(VariableWritten(orch.execution_id, v) for v in variables)
    orch.pool.publish(rt.id, values)
    orch._terminal(
        rt,
        NodeState.COMPLETED,
        {"attempt": rt.attempt, "items": len(run.items), "failed_items": sorted(run.failed)},
    )
