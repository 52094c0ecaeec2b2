"""Which executor runs which task type.

A backend asks the registry for the executor of `task.type`.
`default_registry(environment)` holds one executor per entry point of the
`whenflow.executors` group (the built-in `noop`, `python`, `shell`, `sql`, `http`, `llm`, `spark`
and every installed plugin: `executors/plugins.py`); `register` adds one
by hand.
"""

from __future__ import annotations

from collections.abc import Iterable

from whenflow.domain.connections import ConnectionResolver, NoConnections
from whenflow.domain.task_io import Executor, ExecutorEnvironment
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

    def executors(self) -> tuple[Executor, ...]:
        """The registered executors, by sorted task type."""
        return tuple(self._executors[t] for t in self.types)


def default_registry(
    environment: ExecutorEnvironment | None = None,
    *,
    connections: ConnectionResolver | None = None,
) -> ExecutorRegistry:
    """A registry with an executor for every installed `whenflow.executors` entry point.

    `environment` is what each factory gets; without one, `connections` (no
    connection at all when None) and no settings. A plugin that fails to load
    is registered as a BrokenExecutor naming its distribution (never raised here).
    """
    from whenflow.executors.plugins import discover, load_executors

    if environment is None:
        environment = ExecutorEnvironment(connections=connections or NoConnections())
    return ExecutorRegistry(load_executors(environment, discover()))
