"""The `noop` executor: completes at once and hands its inputs back as outputs.

Useful as a join point, a placeholder while a pipeline is drafted, and in
tests of the engine, where it echoes the values its bindings produced.
"""

from __future__ import annotations

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import ExecutorEnvironment, TaskContext, TaskRequest, TaskResult


class NoopExecutor:
    """Runs `noop` tasks: outputs = the bound inputs."""

    task_type = "noop"

    def check(self, task: TaskSpec) -> list[str]:
        """A noop task has nothing to configure, so nothing can be wrong."""
        return []

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Return the inputs unchanged."""
        return TaskResult(outputs=dict(request.inputs))


def noop_executor(environment: ExecutorEnvironment) -> NoopExecutor:
    """The `noop` entry point of `whenflow.executors`."""
    return NoopExecutor()
