"""Which executor runs which task type.

A backend asks the registry for the executor of `task.type`; plugins add
their own executors with `register`. `default_registry()` holds the built-in
`noop`, `python`, `shell` and `spark` executors.
"""

from __future__ import annotations

from collections.abc import Iterable

from whenflow.domain.connections import ConnectionResolver
from whenflow.domain.task_io import Executor
from whenflow.executors.errors import DuplicateExecutor, UnknownTaskType


class ExecutorRegistry:
    """Executors by task type; one executor per type."""

    def __init__(self, executors: Iterable[Executor] = ()) -> None:
        self._executors: dict[str, Executor] = {}
        for executor in executors:
            self.register(executor)

    def register(self, executor: Executor, *, replace: bool = False) -> None:
        """Add `executor` for its `task_type`; raises DuplicateExecutor unless `replace`."""
        if executor.task_type in self._executors and not replace:
            raise DuplicateExecutor(executor.task_type)
        self._executors[executor.task_type] = executor

    def get(self, task_type: str) -> Executor:
        """The executor for `task_type`; raises UnknownTaskType listing the known types."""
        try:
            return self._executors[task_type]
        except KeyError:
            raise UnknownTaskType(task_type, self.types) from None

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._executors

    @property
    def types(self) -> tuple[str, ...]:
        """The registered task types, sorted."""
        return tuple(sorted(self._executors))


def default_registry(connections: ConnectionResolver | None = None) -> ExecutorRegistry:
    """A registry with the built-in executors: noop, python, shell, spark.

    `connections` is where executors look `connection: NAME` up.
    """
    from whenflow.executors.noop import NoopExecutor
    from whenflow.executors.python import PythonExecutor
    from whenflow.executors.shell import ShellExecutor
    from whenflow.executors.spark import SparkExecutor

    return ExecutorRegistry(
        [NoopExecutor(), PythonExecutor(), ShellExecutor(), SparkExecutor(connections=connections)]
    )
