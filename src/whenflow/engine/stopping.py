"""Stopping this process's work on an execution without a state transition.

Two ways a run stops that are not the execution's own ending (DESIGN.md §7):

- `halt`: the process is interrupted (Ctrl-C, SIGTERM). Attempts are cancelled
  and awaited (their process groups are killed), nothing new is admitted, and
  the execution stays `running` in the store for `resume`.
- `drain`: a gentler halt (a server shutting down): running attempts may
  finish within a grace period first.
- `store_failed`: a commit failed, so nothing more can be written. Attempts are
  cancelled, no unit of work runs any more (the status is terminal in memory
  only) and `wait()` raises the store's error. The durable state is the last
  commit's, and resumes once the fault is gone.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from whenflow.domain.states import ExecutionStatus

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState


async def halt(state: ExecutionState, poller: asyncio.Task[None] | None) -> None:
    state.halting = True
    state.admission_held = True
    for handle in state.within_handles:  # limits are armed again from stored times on resume
        handle.cancel()
    tasks = [*state.tasks, *([poller] if poller is not None else [])]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def drain(state: ExecutionState, poller: asyncio.Task[None] | None, grace_s: float) -> None:
    """A graceful `halt` (a server's SIGTERM): nothing new is admitted, running attempts
    get `grace_s` seconds to finish (their results are recorded), then the rest is
    halted. The execution stays resumable unless it ended meanwhile."""
    state.admission_held = True
    running = [task for task in state.tasks if not task.done()]
    if running:
        await asyncio.wait(running, timeout=grace_s)
    await halt(state, poller)


def store_failed(state: ExecutionState) -> bool:
    """End the run in memory after a store failure; False if it had ended already."""
    if state.done is None or state.done.done():
        return False
    state.status = ExecutionStatus.FAILED  # in memory only: no unit runs any more
    for task in list(state.tasks):
        task.cancel()
    for handle in state.within_handles:
        handle.cancel()
    state.done.set_result(None)
    return True
