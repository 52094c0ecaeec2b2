"""One task attempt, from rendering its inputs to accepting its result (DESIGN.md §5, §7).

These functions are part of the dispatcher: they run on its loop, inside its
units of work, and act on its `ExecutionState`; `foreach`, `endings` and
`recovery` are the other such parts. A worker coroutine only reports back: its
result enters through `attempt_done`, its events and logs through `task_event`
and `task_log`, each fenced by the attempt number.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from whenflow.domain.errors import (
    BindingError,
    StoreError,
    TaskTimeout,
    error_message,
    interrupted_by_user,
    retry_hint,
    task_raised,
)
from whenflow.domain.param_types import fits, type_name
from whenflow.domain.records import LogAppended, VariableWritten
from whenflow.domain.states import NodeState
from whenflow.domain.task_io import TaskRequest, TaskResult
from whenflow.domain.variables import Variable
from whenflow.dsl.compiled_values import contains_missing, render_value
from whenflow.dsl.templates import Namespace, TemplateEvaluationError
from whenflow.engine.attempt_context import AttemptContext
from whenflow.engine.deadlines import arm_node, cuts_retry
from whenflow.engine.endings import fail_node
from whenflow.engine.runtime import NO_ITEM, NodeRuntime
from whenflow.engine.secret_masking import SecretMask
from whenflow.engine.subpipelines import run_child
from whenflow.engine.variable_pool import OutputError, has_files

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState

AttemptHandler = Callable[
    ["ExecutionState", NodeRuntime, int, "int | None", "TaskResult | BaseException"], None
]
"""Takes an attempt's outcome: `(state, rt, attempt, item_index, outcome)`."""


def render_inputs(
    rt: NodeRuntime, context: Mapping[str, Any], mask: SecretMask | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inputs and rendered task config for one attempt; raises BindingError.

    A value rendered by a template that read a secret is revealed to `mask`.
    """
    node = rt.program
    inputs: dict[str, Any] = {}
    signature = node.signature
    reads = 0 if mask is None else mask.reads
    for name, compiled in node.bindings.items():
        try:
            value = render_value(compiled, context)
        except TemplateEvaluationError as exc:
            raise BindingError(node.id, name, str(exc)) from None
        if mask is not None and mask.reads != reads:
            reads = mask.reads
            mask.reveal_derived(value)
        spec = signature.inputs.get(name) if signature else None
        if contains_missing(value):
            if spec is not None and (not spec.required or spec.default is not None):
                continue
            raise BindingError(
                node.id,
                name,
                "reads a value that was never written (its node was skipped, "
                "failed, or did not produce it)",
            )
        if spec is not None and not fits(value, spec.type):
            raise BindingError(
                node.id, name, f"expects {spec.type} but the binding gave {type_name(value)}"
            )
        inputs[name] = value
    if signature is not None:
        for name, spec in signature.inputs.items():
            if name not in inputs and spec.default is not None:
                inputs[name] = spec.default
    config = dict(rt.program.definition.task.config)
    for key, compiled in node.rendered_config.items():
        try:
            value = render_value(compiled, context)
        except TemplateEvaluationError as exc:
            raise BindingError(node.id, f"task.{key}", str(exc)) from None
        if mask is not None and mask.reads != reads:
            reads = mask.reads
            mask.reveal_derived(value)
        if contains_missing(value):
            raise BindingError(node.id, f"task.{key}", "reads a value that was never written")
        config[key] = value
    return inputs, config


def launch(state: ExecutionState, rt: NodeRuntime) -> None:
    attempt = rt.attempt + 1
    try:
        context = state.pool.overlay({"system": system_view(state, attempt)})
        inputs, config = render_inputs(rt, context, state.mask)
    except BindingError as exc:
        rt.attempt = attempt
        fail_node(state, rt, type(exc).__name__, str(exc))
        return
    state.move(rt, NodeState.RUNNING)
    rt.attempt = attempt
    first = rt.started_at is None
    if first:
        rt.started_at = state.clock()
    state.node_row(rt)
    state.attempt_row(rt.id, NO_ITEM, attempt, NodeState.RUNNING)
    state.publish(f"{rt.id}.started", rt.id, {"attempt": attempt})
    if rt.adopt_child is not None:
        # In the unit of `started`: a crash before the child is touched again
        # still finds which child this attempt owns.
        state.publish(
            f"{rt.id}.child_resumed",
            rt.id,
            {"execution_id": rt.adopt_child, "attempt": attempt},
        )
    rt.task = spawn(state, rt, attempt, None, inputs, config)
    if first:
        arm_node(state, rt)


def system_view(state: ExecutionState, attempt: int, item: tuple[Any, int] | None = None) -> Any:

    values: dict[str, Any] = {**state.pool.system, "attempt": attempt}
    if item is not None:
        values["item"], values["index"] = item
    return Namespace("system", values)


def spawn(
    state: ExecutionState,
    rt: NodeRuntime,
    attempt: int,
    item_index: int | None,
    inputs: Mapping[str, Any],
    config: Mapping[str, Any],
    on_done: AttemptHandler | None = None,
) -> asyncio.Task[None]:
    """Start one attempt as a task on the loop; its outcome enters through `on_done`.

    `on_done` (default `attempt_done`) runs as a unit of work with
    `(state, rt, attempt, item_index, outcome)`; forEach items pass their own.
    """
    assert state.loop is not None
    definition = rt.program.definition
    task_spec = definition.task
    if config != task_spec.config:
        task_spec = replace(task_spec, config=config)
    key = state.idempotency_key(rt.id, item_index)
    request = TaskRequest(
        execution_id=state.execution_id,
        node_id=rt.id,
        attempt=attempt,
        task=task_spec,
        inputs=inputs,
        idempotency_key=key,
        item_index=item_index,
        timeout_s=definition.timeout_s,
    )
    ctx = AttemptContext(
        loop=state.loop,
        execution_id=state.execution_id,
        node_id=rt.id,
        attempt=attempt,
        item_index=item_index,
        idempotency_key=key,
        emit_sink=functools.partial(task_event, state),
        log_sink=functools.partial(task_log, state),
        log_limit=state.task_log_limit,
        declared_events=rt.program.emits,
    )
    adopt, rt.adopt_child = rt.adopt_child, None
    work = run_attempt(state, rt, request, ctx, adopt, on_done or attempt_done)
    return state.start_task(work, f"whenflow:{rt.id}#{attempt}")


async def run_attempt(
    state: ExecutionState,
    rt: NodeRuntime,
    request: TaskRequest,
    ctx: AttemptContext,
    adopt_child: str | None = None,
    on_done: AttemptHandler | None = None,
) -> None:
    timeout = request.timeout_s
    outcome: TaskResult | BaseException
    child = rt.program.child
    deadline: asyncio.Timeout | None = None
    try:
        if read_files := state.pool.file_refs(rt.program.reads):
            await asyncio.to_thread(state.pool.verify_files, read_files)
        if child is not None:
            work = run_child(state, child, request, ctx, adopt_child)
        else:
            work = state.runner.run(request, ctx)
        if timeout is None:
            # `asyncio.timeout(None)` never fires but costs ~3 µs per attempt.
            outcome = await work
        else:
            async with asyncio.timeout(timeout) as deadline:
                outcome = await work
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():  # the engine cancelled this attempt
            if is_current(rt, request.attempt, request.item_index):
                raise
            return
        outcome = task_raised(exc)  # the task's own code raised it
    except TimeoutError as exc:
        # Only the attempt's own deadline is a TaskTimeout; a task raising Python's
        # TimeoutError (a socket, a lock) failed with that error.
        expired = deadline is not None and deadline.expired()
        outcome = TaskTimeout(rt.id, timeout or 0.0) if expired else exc
    except Exception as exc:
        outcome = exc
    except BaseException as exc:  # SystemExit, KeyboardInterrupt...: the task's outcome
        if interrupted_by_user(exc):
            raise
        outcome = task_raised(exc)
    finally:
        ctx.close()
    if isinstance(outcome, TaskResult) and has_files(outcome.outputs):
        copied = await _copy_files(state, request, outcome)
        if outcome.scratch:
            await asyncio.to_thread(_remove_scratch, outcome.scratch)
        outcome = copied
    state.run_unit(on_done or attempt_done, state, rt, request.attempt, request.item_index, outcome)


async def _copy_files(
    state: ExecutionState, request: TaskRequest, result: TaskResult
) -> TaskResult | OutputError:
    """Store the attempt's file outputs from a worker thread, not the dispatcher's loop."""
    key_prefix = output_key_prefix(state, request.node_id, request.item_index)
    try:
        copied = await asyncio.to_thread(state.pool.copy_files, result.outputs, key_prefix)
    except OutputError as exc:
        return exc
    except Exception as exc:  # any store error fails the attempt; the node must not hang
        return OutputError(f"cannot store the file outputs: {type(exc).__name__}: {exc}")
    return replace(result, outputs=copied)


def _remove_scratch(paths: tuple[str, ...]) -> None:
    """Delete the files and folders an executor wrote only to hand them over
    (TaskResult.scratch). Best effort: what cannot be deleted stays, the attempt's
    outcome does not change."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)


def output_key_prefix(state: ExecutionState, node_id: str, item_index: int | None) -> str:
    """Where a node's (or a forEach item's) artifacts go in the artifact store."""
    prefix = f"{state.execution_id}/{node_id}"
    return prefix if item_index is None else f"{prefix}/{item_index}"


def task_event(
    state: ExecutionState,
    node_id: str,
    attempt: int,
    item: int,
    name: str,
    payload: Mapping[str, Any],
) -> None:
    """A running task's custom event: published as `<node>.<name>` if its attempt is current."""
    rt = state.nodes[node_id]
    if not is_current(rt, attempt, None if item == NO_ITEM else item):
        return
    body = {**payload, "attempt": attempt}
    if item != NO_ITEM:
        body["index"] = item
    state.run_unit(state.publish, f"{node_id}.{name}", node_id, body)


def task_log(
    state: ExecutionState, node_id: str, attempt: int, item: int, stream: str, message: str
) -> None:
    """A line of a task's log; it goes straight to the store, outside any unit of work.
    A NUL in it becomes U+FFFD: PostgreSQL cannot store NUL in text."""
    message = message.replace("\x00", "\ufffd")
    if state.mask:
        message = state.mask.text(message)
    line = LogAppended(state.execution_id, node_id, attempt, item, stream, message, state.clock())
    # A failed store raises here: the dispatcher is ending the run with that error.
    with contextlib.suppress(StoreError):
        state.store.append([line])
    for listener in state.log_listeners:
        listener(line)


def is_current(rt: NodeRuntime, attempt: int, item_index: int | None) -> bool:
    if rt.state is not NodeState.RUNNING:
        return False
    if item_index is None:
        return rt.attempt == attempt and rt.foreach is None
    run = rt.foreach
    return run is not None and run.attempts.get(item_index) == attempt and item_index in run.running


def settle(state: ExecutionState, rt: NodeRuntime, attempt: int, item_index: int | None) -> bool:
    """Count a finished attempt out; False for a stale one (cancelled or superseded)."""
    if not is_current(rt, attempt, item_index):
        return False  # a stale result of a cancelled or superseded attempt: fenced off
    state.running -= 1
    return True


def attempt_done(
    state: ExecutionState,
    rt: NodeRuntime,
    attempt: int,
    item_index: int | None,
    outcome: TaskResult | BaseException,
) -> None:
    if not settle(state, rt, attempt, item_index):
        return
    rt.task = None
    if isinstance(outcome, TaskResult):
        try:
            values, variables = accept_outputs(
                state, rt, outcome.outputs, output_key_prefix(state, rt.id, None)
            )
        except OutputError as exc:
            outcome = exc
        else:
            state.records.extend(VariableWritten(state.execution_id, v) for v in variables)
            state.pool.publish(rt.id, values)
            state.attempt_row(rt.id, NO_ITEM, attempt, NodeState.COMPLETED)
            rt.error = None
            state.terminal(rt, NodeState.COMPLETED, {"attempt": attempt})
            return
    attempt_failed(state, rt, attempt, outcome)


def accept_outputs(
    state: ExecutionState,
    rt: NodeRuntime,
    outputs: Mapping[str, Any],
    key_prefix: str,
    *,
    item: bool = False,
) -> tuple[dict[str, Any], list[Variable]]:
    """Validate and store one attempt's outputs; `item` for a forEach item's."""
    values, variables = state.pool.store_outputs(
        rt.id, outputs, key_prefix=key_prefix, at=state.clock(), remember_refs=not item
    )
    signature = rt.program.signature
    if signature is not None:
        for name, spec in signature.outputs.items():
            if name in values and not fits(values[name], spec.type):
                raise OutputError(
                    f"node {rt.id!r}, output {name!r}: declared {spec.type} but the task "
                    f"returned {type_name(values[name])}"
                )
    return values, variables


def attempt_failed(
    state: ExecutionState, rt: NodeRuntime, attempt: int, error: BaseException
) -> None:
    error_type = type(error).__name__
    message = error_message(error)
    state.attempt_row(rt.id, NO_ITEM, attempt, NodeState.FAILED, error_type, message)
    policy = rt.program.definition.retry
    if attempt - rt.lost_attempts < policy.max_attempts and policy.retries(error_type):
        delay = policy.delay_after(attempt - rt.lost_attempts, retry_hint(error))
        if cuts_retry(state, rt, attempt, delay, message):
            return
        state.move(rt, NodeState.RETRYING)
        rt.error = message
        state.node_row(rt)
        state.publish(
            f"{rt.id}.retrying",
            rt.id,
            {"attempt": attempt, "delay": delay, "error_type": error_type, "message": message},
        )
        rt.retry_timer = state.call_later(delay, retry_due, state, rt)
        return
    fail_node(state, rt, error_type, message)


def retry_due(state: ExecutionState, rt: NodeRuntime) -> None:
    rt.retry_timer = None
    if rt.state is NodeState.RETRYING:
        rt.queued = True
        state.enqueue(rt.id)
