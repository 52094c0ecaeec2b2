"""`pipeline` tasks: one attempt is one child execution of another pipeline (DESIGN.md §5).

The child is an execution of its own — its own id, event log and variables,
`parent_execution_id` pointing back — run by a second dispatcher on the same
loop, store and runner. The node's bindings are the child's inputs (checked
against its declared `inputs`), the child's pipeline `outputs` become the node's
outputs, and a child that ends other than `completed` fails the attempt, so
`retry`, `timeout` and `allowFailure` apply as to any task. Stopping or
cancelling the node cancels the child; its id is published as the parent's
custom event `<node>.child_started`, before any of its work runs.

After a crash, the parent's new attempt *adopts* the child its lost attempt
started (`<node>.child_resumed`): an unfinished child is resumed, a finished
one gives its result, and no second child runs the same work. A node that a
request ended before its new attempt (a cancel posted while nobody ran the
parent) cancels the child it would have adopted (`cancel_orphans`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from whenflow.domain.errors import ExecutionNotFound, SubPipelineFailed
from whenflow.domain.param_types import resolve_inputs
from whenflow.domain.states import ExecutionStatus
from whenflow.domain.task_io import TaskContext, TaskRequest, TaskResult
from whenflow.dsl.program import PipelineProgram
from whenflow.engine.runtime import ExecutionResult, NodeRuntime

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState


async def run_child(
    state: ExecutionState,
    child: PipelineProgram,
    request: TaskRequest,
    ctx: TaskContext,
    adopt: str | None = None,
) -> TaskResult:
    """Run the child execution to its end; raise SubPipelineFailed unless it completed.

    `adopt` is the id of a child a lost attempt started: it is resumed (or,
    if it has finished, its stored result is used) instead of starting anew.
    """
    from whenflow.engine.orchestrator import Orchestrator  # the dispatcher runs this module

    snapshot = None
    if adopt is not None:
        try:
            snapshot = await state.store.load_execution(adopt)
        except ExecutionNotFound:
            adopt = None  # the crash came before the child's first commit: start it anew
    if snapshot is not None:
        inputs = dict(snapshot.inputs)
    else:
        inputs = resolve_inputs(child.definition.inputs, request.inputs)
    orchestrator = Orchestrator(
        child,
        store=state.store,
        runner=state.runner,
        artifacts=state.pool.artifacts,
        inputs=inputs,
        execution_id=adopt,
        clock=state.clock,
        parent_execution_id=state.execution_id,
        secrets=state.secrets,
        mask=state.mask,  # secrets bound into its inputs stay masked in the child too
        task_log_limit=state.task_log_limit,
        shared_inbox=state.on_child is not None,
    )
    if state.on_child is not None:
        orchestrator.state.on_child = state.on_child
        state.on_child(orchestrator)
    if snapshot is None:
        ctx.emit("child_started", {"execution_id": orchestrator.execution_id})
    # An adopted child was announced (`child_resumed`) with the attempt's start.
    try:
        if snapshot is None:
            await orchestrator.start()
            await orchestrator.ended()
        elif snapshot.status.is_terminal:
            return _outcome(ExecutionResult.from_snapshot(snapshot))
        else:
            await orchestrator.resume(snapshot)
    except asyncio.CancelledError:
        if orchestrator.state.loop is not None:
            if state.halting:  # the process stops: the child stays resumable, as its parent
                await orchestrator.halt()
            else:
                orchestrator.cancel(f"its parent node {request.node_id!r} was stopped or cancelled")
                await asyncio.shield(orchestrator.wait())
        raise
    return _outcome(await orchestrator.wait())


def _outcome(result: ExecutionResult) -> TaskResult:
    if result.status is not ExecutionStatus.COMPLETED:
        raise SubPipelineFailed(result.execution_id, result.status.value, result.error)
    return TaskResult(outputs=result.outputs)


async def cancel_orphans(state: ExecutionState) -> None:
    """Cancel the children that ended nodes would have adopted (`cancel_orphan`)."""
    for rt in state.node_list:
        if rt.adopt_child is not None and rt.state.is_terminal:
            await cancel_orphan(state, rt)


async def cancel_orphan(state: ExecutionState, rt: NodeRuntime) -> None:
    """Cancel the unfinished child a lost attempt of `rt` started; `rt` has ended.

    The child is claimed and resumed only to be cancelled: nothing of it is
    relaunched.
    """
    from whenflow.engine.orchestrator import Orchestrator  # the dispatcher runs this module

    child_id, rt.adopt_child = rt.adopt_child, None
    child = rt.program.child
    if child_id is None or child is None:
        return
    try:
        snapshot = await state.store.load_execution(child_id)
    except ExecutionNotFound:
        return
    if snapshot.status.is_terminal:
        return
    orchestrator = Orchestrator(
        child,
        store=state.store,
        runner=state.runner,
        artifacts=state.pool.artifacts,
        inputs=dict(snapshot.inputs),
        execution_id=child_id,
        clock=state.clock,
        parent_execution_id=state.execution_id,
        secrets=state.secrets,
        mask=state.mask,
    )
    await orchestrator.resume(snapshot, cancel=f"its parent node {rt.id!r} ended ({rt.state})")
