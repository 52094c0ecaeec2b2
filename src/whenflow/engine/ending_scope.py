"""What an execution is ending with: the `ending` scope of finally nodes and the final status.

Part of the dispatcher (DESIGN.md §5, Cleanup). Finally nodes run once every
other node has ended or the execution is ending early; they read why through
`{{ ending.status }}` (completed, failed, stopped, cancelled), `{{ ending.reason }}`
(the error or the reason, "" when the rest completed) and `{{ ending.failed }}`
(the ids of the other nodes that failed). Nothing here changes a node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.engine.runtime import NodeRuntime

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState


def is_finally(rt: NodeRuntime) -> bool:
    return rt.program.definition.is_finally


def closed_to(state: ExecutionState, rt: NodeRuntime) -> bool:
    """Whether the ending keeps `rt` from starting: every node but a finally one."""
    return state.ending is not None and not rt.program.definition.is_finally


def ending_view(state: ExecutionState) -> dict[str, Any]:
    """The `ending` scope: how the rest of the execution ended, before the finally nodes."""
    failed = [
        rt.id for rt in state.node_list if rt.state is NodeState.FAILED and not is_finally(rt)
    ]
    if state.ending is not None:
        status, reason = state.ending.value, state.ending_reason or state.error or ""
    else:
        counted = [n for n in failed if not state.nodes[n].program.definition.allow_failure]
        status = ExecutionStatus.FAILED.value if counted else ExecutionStatus.COMPLETED.value
        reason = f"node(s) failed: {', '.join(counted)}" if counted else ""
    return {"status": status, "reason": reason, "failed": failed}


def final_status(state: ExecutionState) -> tuple[ExecutionStatus, str | None]:
    """The execution's terminal status and error, once every node has ended.

    A failed node (not `allowFailure`) makes a completing execution failed; a
    failed finally node makes any execution failed, and the error then says
    how the rest ended too.
    """
    status = state.ending or ExecutionStatus.COMPLETED
    error = state.error
    body: list[str] = []
    cleanup: list[str] = []
    for rt in state.node_list:
        if rt.state is NodeState.FAILED and not rt.program.definition.allow_failure:
            (cleanup if is_finally(rt) else body).append(rt.id)
    if status is ExecutionStatus.COMPLETED and body:
        status = ExecutionStatus.FAILED
        error = error or f"node(s) failed: {', '.join(body)}"
    if cleanup:
        before = error or state.ending_reason or f"the other nodes {status.value}"
        error = f"{before}; then finally node(s) failed: {', '.join(cleanup)}"
        status = ExecutionStatus.FAILED
    return status, error
