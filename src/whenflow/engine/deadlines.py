"""Deadlines: a node's `deadline` over all its attempts, and the pipeline's `spec.timeout`
(DESIGN.md §5).

Part of the dispatcher, like `attempts` and `endings`: these functions run
inside its units of work and act on its `ExecutionState`.

- A node's deadline counts from its first attempt's start (`started_at`, stored
  with the node). When it passes, the running attempt is cancelled and the node
  fails with `DeadlineExceeded`; a retry whose delay would end past it is not
  scheduled (`cuts_retry`). `allowFailure` applies to the outcome as usual.
- The pipeline timeout counts from the execution's creation. When it passes,
  `end_all` cancels running and pending nodes (a running sub-pipeline is
  cancelled with its node), the finally nodes run, bounded by `finallyGrace`,
  and the execution ends `failed` with "pipeline timeout 5m passed".

Both are loop timers that are not counted in `state.timers`: a timer that is
only a limit must not keep a quiescent execution from ending. `arm` sets them
from the stored times, so after a resume they keep their clock, and what is
already overdue ends at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from whenflow.domain.durations import format_duration
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.engine.cleanup import bound
from whenflow.engine.endings import cancel_work, close_running_attempts, end_all, fail_node
from whenflow.engine.runtime import NodeRuntime

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState

DEADLINE_ERROR = "DeadlineExceeded"
_OPEN = (NodeState.RUNNING, NodeState.RETRYING, NodeState.WAITING)


def arm(state: ExecutionState) -> None:
    """Arm the pipeline timeout and the deadlines of nodes that have started (start, resume)."""
    timeout = state.definition.timeout_s
    if timeout is not None:
        left = state.started_at + timeout - state.clock()
        if left <= 0:
            pipeline_timeout_passed(state)
        else:
            _later(state, left, pipeline_timeout_passed, state)
    for rt in state.node_list:
        if rt.state in _OPEN:
            arm_node(state, rt)


def arm_node(state: ExecutionState, rt: NodeRuntime) -> None:
    """Arm the node's deadline from its first attempt's start; fail it now if overdue."""
    deadline = node_deadline(rt)
    if deadline is None:
        return
    left = deadline - state.clock()
    if left <= 0:
        node_deadline_passed(state, rt)
    else:
        _later(state, left, node_deadline_passed, state, rt)


def node_deadline(rt: NodeRuntime) -> float | None:
    """When the node's deadline passes (unix seconds), or None."""
    limit = rt.program.definition.deadline_s
    if limit is None or rt.started_at is None:
        return None
    return rt.started_at + limit


def _later(state: ExecutionState, delay: float, handler: object, *args: object) -> None:
    assert state.loop is not None
    handle = state.loop.call_later(delay, state.run_unit, handler, *args)
    state.within_handles.append(handle)  # cancelled when the execution ends


def node_deadline_passed(state: ExecutionState, rt: NodeRuntime) -> None:
    if rt.state not in _OPEN:
        return
    limit = format_duration(rt.program.definition.deadline_s or 0.0)
    if rt.state is NodeState.RETRYING:
        message = f"deadline {limit} passed while waiting to retry after attempt {rt.attempt}"
    else:
        message = f"deadline {limit} passed during attempt {rt.attempt}"
    close_running_attempts(state, rt, NodeState.FAILED, message, DEADLINE_ERROR)
    cancel_work(state, rt)
    fail_node(state, rt, DEADLINE_ERROR, message)


def cuts_retry(
    state: ExecutionState, rt: NodeRuntime, attempt: int, delay: float, error: str
) -> bool:
    """Fail the node instead of retrying when the retry could only start past its deadline."""
    deadline = node_deadline(rt)
    if deadline is None or state.clock() + delay < deadline:
        return False
    limit = format_duration(rt.program.definition.deadline_s or 0.0)
    message = (
        f"deadline {limit} would pass before attempt {attempt + 1} "
        f"(retry delay {format_duration(delay)}); attempt {attempt} failed: {error}"
    )
    fail_node(state, rt, DEADLINE_ERROR, message)
    return True


def pipeline_timeout_passed(state: ExecutionState) -> None:
    """Stop running work, start nothing new but the finally nodes, and fail the execution."""
    if state.status.is_terminal:
        return
    if state.ending is None:
        timeout = format_duration(state.definition.timeout_s or 0.0)
        end_all(state, ExecutionStatus.FAILED, f"pipeline timeout {timeout} passed")
    bound(state, "pipeline timeout")
