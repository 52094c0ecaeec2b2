"""The local backend: run every attempt in this process, through its executor.

`LocalRunner` is the `TaskRunner` (whenflow.engine.ports) the engine uses by
default. It only looks the executor up and awaits it; where the work really
happens (the loop, a thread pool, a child process) is the executor's choice.
It is kept thin on purpose: it is the seam where a distributed backend
(Celery) plugs in with the same three methods.

Backends and executors are sibling layers that must not import each other,
so the registry is typed structurally (`ExecutorLookup`) rather than imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import Executor, TaskContext, TaskRequest, TaskResult

_log = logging.getLogger("whenflow.executors")


class ExecutorLookup(Protocol):
    """What the runner needs of an executor registry (`whenflow.executors.registry`)."""

    @property
    def types(self) -> tuple[str, ...]: ...

    def get(self, task_type: str) -> Executor:
        """The executor for `task_type`; raises a WhenflowError naming the known types."""
        ...


class LocalRunner:
    """Runs task attempts in-process with the executors of `registry`."""

    def __init__(self, registry: ExecutorLookup) -> None:
        self._registry = registry

    def knows(self, task_type: str) -> bool:
        """Whether an executor is registered for `task_type`."""
        return task_type in self._registry.types

    def rendered_fields(self, task_type: str) -> tuple[str, ...]:
        """The config fields its executor renders per attempt (its `rendered_fields`)."""
        if not self.knows(task_type):
            return ()
        return tuple(getattr(self._registry.get(task_type), "rendered_fields", ()))

    def check(self, request_task: TaskSpec) -> list[str]:
        """Configuration problems of a task, from its executor (or an unknown type)."""
        if not self.knows(request_task.type):
            known = ", ".join(self._registry.types) or "none"
            return [f"unknown task type {request_task.type!r}; known types: {known}"]
        try:
            return self._registry.get(request_task.type).check(request_task)
        except Exception as exc:  # a plugin's bug must not end `whenflow validate`
            return [
                f"the {request_task.type!r} executor could not check this task "
                f"({type(exc).__name__}: {exc}); report it to the executor's authors"
            ]

    async def run(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Run one attempt with the executor of `request.task.type`."""
        return await self._registry.get(request.task.type).execute(request, ctx)

    def close(self) -> None:
        """Release what the executors hold (thread pools); attempts still running finish."""
        for task_type in self._registry.types:
            close: Callable[[], object] | None = getattr(
                self._registry.get(task_type), "close", None
            )
            if callable(close):
                try:
                    close()
                except Exception as exc:  # a plugin's bug: the others still close, the run ends
                    _log.warning(
                        "the %r executor failed to close: %s: %s",
                        task_type,
                        type(exc).__name__,
                        exc,
                    )
