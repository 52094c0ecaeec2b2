"""One exception tree for the whole project.

WhenflowError
├── DefinitionError          a pipeline or task definition is invalid (exit 2)
│   └── DefinitionErrors     several located issues, reported together
├── InputError               execution inputs do not match the pipeline's inputs (exit 2)
├── TaskError                one attempt of a task failed
│   ├── BindingError         an input binding could not be rendered or typed
│   ├── TaskTimeout          the attempt ran past its timeout
│   ├── SubPipelineFailed    a `pipeline` task's child execution did not complete
│   └── TaskCancelled        the attempt was cancelled (stopWhen, failFast, cancel)
├── ExpressionError          a trigger condition failed at run time
├── ExecutionNotFound        no execution with that id in the store
├── AmbiguousExecutionId     an id prefix names several executions
└── StoreError               the state store cannot be used
    └── StoreSettingsError   a store setting is invalid or unreachable (exit 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class WhenflowError(Exception):
    """Root of every error whenflow raises on purpose."""


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """Where in a definition file something stands (1-based line and column)."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class DefinitionIssue:
    """One problem found in a definition: where, which field, what is wrong."""

    message: str
    location: SourceLocation | None = None
    field: str = ""

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        what = f"{self.field}: " if self.field else ""
        return f"{where}{what}{self.message}"


class DefinitionError(WhenflowError):
    """A definition is invalid; fix the file at the location given."""

    def __init__(self, issue: DefinitionIssue) -> None:
        super().__init__(str(issue))
        self.issues: tuple[DefinitionIssue, ...] = (issue,)


class DefinitionErrors(DefinitionError):
    """Several definition problems, reported together so one run shows them all."""

    def __init__(self, issues: Sequence[DefinitionIssue]) -> None:
        if not issues:
            raise ValueError("DefinitionErrors needs at least one issue")
        WhenflowError.__init__(self, "\n".join(str(i) for i in issues))
        self.issues = tuple(issues)


class InputError(WhenflowError):
    """Execution inputs do not fit the pipeline's declared `inputs`."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"input {name!r}: {message}")
        self.name = name


class TaskError(WhenflowError):
    """One attempt of a task failed; the node retries or fails."""


class BindingError(TaskError):
    """An input binding of a node could not be rendered or does not fit its type."""

    def __init__(self, node_id: str, input_name: str, message: str) -> None:
        super().__init__(f"node {node_id!r}, input {input_name!r}: {message}")
        self.node_id = node_id
        self.input_name = input_name


class TaskTimeout(TaskError):
    """The attempt ran longer than the node's `timeout`; raise it or make the task faster."""

    def __init__(self, node_id: str, timeout_s: float) -> None:
        super().__init__(f"node {node_id!r} timed out after {timeout_s:g}s")
        self.node_id = node_id
        self.timeout_s = timeout_s


class SubPipelineFailed(TaskError):
    """The child execution of a `pipeline` task did not complete; read its events."""

    def __init__(self, execution_id: str, status: str, error: str | None) -> None:
        detail = f": {error}" if error else ""
        super().__init__(
            f"sub-pipeline execution {execution_id} ended {status}{detail}; "
            f"see `whenflow executions show {execution_id}`"
        )
        self.execution_id = execution_id
        self.status = status


class TaskCancelled(TaskError):
    """The attempt was cancelled by stopWhen, failFast or a cancel request."""


class ExpressionError(WhenflowError):
    """A trigger condition raised while being evaluated; the message quotes it."""

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(f"in {expression!r}: {message}")
        self.expression = expression


class RequestRefused(WhenflowError):
    """A decision, event or cancel that cannot apply to this execution as it is now.

    The message says why (it has ended, the node is not waiting); check the
    execution with `whenflow executions show ID`.
    """


class ExecutionNotFound(WhenflowError):
    """No execution with this id; list them with `whenflow executions list`."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(
            f"no execution {execution_id!r}; `whenflow executions list` shows the known ones"
        )
        self.execution_id = execution_id


class AmbiguousExecutionId(WhenflowError):
    """An id prefix names several executions; give more of the id."""

    def __init__(self, prefix: str, candidates: Sequence[str], more: bool = False) -> None:
        listed = ", ".join(candidates) + (", ..." if more else "")
        super().__init__(
            f"execution id prefix {prefix!r} is ambiguous: it names {listed}; give more of the id"
        )
        self.prefix = prefix
        self.candidates = tuple(candidates)


class StoreError(WhenflowError):
    """The state store cannot be opened or written; check WHENFLOW_HOME / the database URL."""


class StoreSettingsError(StoreError):
    """A store setting (database URL, artifacts URL, home folder) is invalid or unreachable.

    The message names the setting and what to change; the CLI exits 2.
    """
