"""Errors the executors raise, below `whenflow.domain.errors`.

    WhenflowError
    ├── UnknownTaskType            no executor is registered for a task type
    ├── DuplicateExecutor          two executors registered for one task type
    └── TaskError
        ├── ExecutorPluginError    an installed executor plugin failed to load
        ├── InvalidTaskConfig      the task block cannot run as written
        │   └── CallableNotFound   a python `callable` cannot be imported
        ├── TaskOutputError        a task returned something that is not outputs
        ├── ShellCommandFailed     a shell task exited with a non-zero code
        ├── SqlFailed              a sql task's database refused a statement or a connection
        ├── ChildProcessDied       an isolated python child died without an answer
        └── TaskRaised (domain)
            └── IsolatedTaskError  an exception raised inside an isolated child;
                                   re-created under the child's exception type name

Every error that fails an attempt is a `TaskError`, so the engine's retry
policy (`retry_on` matches `type(exc).__name__`) treats all of them alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from whenflow.domain.errors import TaskError, TaskRaised, WhenflowError, task_raised_class


class UnknownTaskType(WhenflowError):
    """No executor handles `task_type`; the message lists the types that exist."""

    def __init__(self, task_type: str, known: Sequence[str]) -> None:
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"unknown task type {task_type!r}; known types: {listed}. "
            "Fix `task.type` or install the plugin that provides it."
        )
        self.task_type = task_type
        self.known = tuple(sorted(known))


class DuplicateExecutor(WhenflowError):
    """An executor for `task_type` is already registered; pass `replace=True` to override it."""

    def __init__(self, task_type: str) -> None:
        super().__init__(
            f"an executor for task type {task_type!r} is already registered; "
            "use register(..., replace=True) to override it"
        )
        self.task_type = task_type


class ExecutorPluginError(TaskError):
    """An entry point of `whenflow.executors` could not give its executor.

    Raised by the tasks of its type (and reported by `whenflow validate`), not
    at start-up: a broken plugin stops only the pipelines that use it.
    """

    def __init__(self, name: str, distribution: str, reason: str) -> None:
        super().__init__(
            f"executor plugin {name!r} from the distribution {distribution} failed to load: "
            f"{reason}; reinstall or upgrade {distribution.split()[0]}, or uninstall it"
        )
        self.name = name
        self.distribution = distribution
        self.reason = reason


class InvalidTaskConfig(TaskError):
    """A task's configuration cannot run; the message names the field to fix."""

    def __init__(self, task_type: str, message: str) -> None:
        super().__init__(f"{task_type} task: {message}")
        self.task_type = task_type
        self.reason = message


class CallableNotFound(InvalidTaskConfig):
    """`callable: module:function` could not be imported or is not callable."""

    def __init__(self, spec: str, message: str) -> None:
        super().__init__("python", f"callable {spec!r}: {message}")
        self.spec = spec


class TaskOutputError(TaskError):
    """A task returned a value that cannot be its outputs (not a dict, not JSON)."""


class ShellCommandFailed(TaskError):
    """A shell task exited with a non-zero code; `stderr_tail` holds its last stderr lines."""

    def __init__(self, exit_code: int, stderr_tail: Sequence[str]) -> None:
        if exit_code < 0:
            what = f"was killed by signal {-exit_code}"
        else:
            what = f"exited with code {exit_code}"
        tail = "\n".join(stderr_tail)
        detail = f"; last stderr lines:\n{tail}" if tail else " (it wrote nothing to stderr)"
        super().__init__(f"shell task {what}{detail}")
        self.exit_code = exit_code
        self.stderr_tail = tuple(stderr_tail)


class SqlFailed(TaskError):
    """A `sql` task failed in its database; the transaction was rolled back.

    The message names the node, the statement (its number and first words) and
    the database's own words, never the bound values.
    """

    def __init__(self, node_id: str, where: str, reason: str) -> None:
        super().__init__(f"sql task of node {node_id!r}: {where} failed: {reason}")
        self.node_id = node_id
        self.where = where
        self.reason = reason


class ChildProcessDied(TaskError):
    """An `isolation: process` child exited without sending a result or an error."""

    def __init__(self, exit_code: int | None, stderr_tail: Sequence[str]) -> None:
        tail = "\n".join(stderr_tail)
        detail = f"; last stderr lines:\n{tail}" if tail else ""
        super().__init__(
            f"the isolated python process exited with code {exit_code} before returning "
            f"a result (crash, os._exit or an external kill){detail}"
        )
        self.exit_code = exit_code
        self.stderr_tail = tuple(stderr_tail)


class IsolatedTaskError(TaskRaised):
    """Base of the exceptions re-raised from an `isolation: process` child.

    Only JSON crosses the process boundary, so the child's exception is rebuilt
    as a subclass of this one named like the original (`ValueError`, ...):
    `type(exc).__name__` and `str(exc)` match what a thread run would give.
    """

    error_type: str = "IsolatedTaskError"
    child_module: str = ""
    child_traceback: str = ""


def isolated_error(
    error_type: str, message: str, *, module: str = "", traceback: str = ""
) -> IsolatedTaskError:
    """An IsolatedTaskError whose class is named `error_type` (one class per name, cached)."""
    cls = task_raised_class(error_type, IsolatedTaskError)
    error = cls(message)
    error.child_module = module
    error.child_traceback = traceback
    return error
