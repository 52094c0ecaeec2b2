"""One exception tree for the whole project.

WhenflowError
├── DefinitionError          a pipeline or task definition is invalid (exit 2)
│   └── DefinitionErrors     several located issues, reported together
├── InputError               execution inputs do not match the pipeline's inputs (exit 2)
├── TaskError                one attempt of a task failed
│   ├── TaskRaised           what a task's own code raised, rebuilt under its type's
│   │                        name (SystemExit and other BaseExceptions, an isolated
│   │                        child's exception)
│   ├── BindingError         an input binding could not be rendered or typed
│   ├── TaskTimeout          the attempt ran past its timeout
│   ├── SubPipelineFailed    a `pipeline` task's child execution did not complete
│   └── TaskCancelled        the attempt was cancelled (stopWhen, failFast, cancel)
├── ExpressionError          a trigger condition failed at run time
├── RequestRefused           a request cannot apply to the execution as it is now
│   └── ExecutionOwned       another live process owns the execution
├── ExecutionNotFound        no execution with that id in the store
├── AmbiguousExecutionId     an id prefix names several executions
├── ScheduleNotFound         no schedule with that id in the store
└── StoreError               the state store cannot be used
    ├── OwnershipLost        another process took over an execution this one ran
    └── StoreSettingsError   a store setting is invalid or unreachable (exit 2)
"""

from __future__ import annotations

import keyword
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar


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


class TaskRaised(TaskError):
    """An exception the task's own code raised, rebuilt as a TaskError named like it.

    Used where the original cannot travel as it is: a `SystemExit`,
    `KeyboardInterrupt` or other `BaseException` would end whenflow itself, and
    an isolated child's exception exists only as JSON. `type(exc).__name__` is
    the original type's name, so `retryOn` and the failure event name it.
    """

    error_type: str = "TaskRaised"


_R = TypeVar("_R", bound=TaskRaised)
_RAISED_CLASSES: dict[str, type[TaskRaised]] = {}


def task_raised_class(error_type: str, base: type[_R]) -> type[_R]:
    """A subclass of `base` named `error_type` (one class per name and base, cached)."""
    name = error_type if error_type.isidentifier() and not keyword.iskeyword(error_type) else ""
    name = name or base.__name__
    key = f"{base.__module__}.{base.__qualname__}:{name}"
    cls = _RAISED_CLASSES.get(key)
    if cls is None:
        created = type(name, (base,), {"__module__": base.__module__, "error_type": name})
        cls = _RAISED_CLASSES.setdefault(key, created)
    return cls  # type: ignore[return-value]  # created as a subclass of `base` above


def exception_text(exc: BaseException) -> str:
    """`str(exc)`, or a placeholder when the exception's own `__str__` fails.

    A task's exception class is the task's code: its `__str__` raising must fail
    that attempt, not the dispatcher that reads the message.
    """
    try:
        text = str(exc)
    except Exception as failure:
        return f"<the {type(exc).__name__}'s message could not be read: {type(failure).__name__}>"
    return text


def base_exception_message(exc: BaseException) -> str:
    """What a task's `BaseException` says, in words (`sys.exit(0)` says only "0")."""
    if isinstance(exc, SystemExit):
        try:
            code = repr(exc.code)
        except Exception:
            code = f"<{type(exc.code).__name__}>"
        return f"the task called sys.exit({code}); a task cannot end whenflow"
    return exception_text(exc) or f"the task raised {type(exc).__name__}"


def task_raised(exc: BaseException) -> TaskRaised:
    """`exc` (a SystemExit, KeyboardInterrupt, StopIteration...) as a TaskError of its name."""
    error = task_raised_class(type(exc).__name__, TaskRaised)(base_exception_message(exc))
    error.__cause__ = exc
    return error


def interrupted_by_user(exc: BaseException) -> bool:
    """A KeyboardInterrupt from Ctrl-C (asyncio's SIGINT handler), not raised by a task."""
    if not isinstance(exc, KeyboardInterrupt):
        return False
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "_on_sigint" and code.co_filename.endswith("runners.py"):
            return True
        tb = tb.tb_next
    return False


MAX_ERROR_MESSAGE = 16 * 1024
"""Characters of an error message an attempt records (in its row, its node's and
its event); a task's exception can carry megabytes, as its log could."""


def retry_hint(error: BaseException) -> float | None:
    """Seconds a failed attempt's error asks to wait before the next one, or None.

    An error says so with a `retry_after_s` attribute (an HTTP 429's
    Retry-After, for instance); the retry policy waits at least that long.
    """
    hint = getattr(error, "retry_after_s", None)
    if isinstance(hint, bool) or not isinstance(hint, int | float) or not hint > 0:
        return None
    return float(hint)


def error_message(error: BaseException) -> str:
    """The message a failed attempt records: a foreign exception keeps its type in front.

    whenflow's own errors speak for themselves; anything else (a task's
    `KeyError('rows')`, an isolated child's error) reads `KeyError: 'rows'`.
    A message over MAX_ERROR_MESSAGE characters is cut, and says so. A NUL in it
    (a task's stderr) becomes U+FFFD: PostgreSQL cannot store NUL in text.
    """
    text = exception_text(error).replace("\x00", "\ufffd")
    if isinstance(error, WhenflowError) and not isinstance(error, TaskRaised):
        message = text or type(error).__name__
    else:
        name = type(error).__name__
        message = f"{name}: {text}" if text else name
    if len(message) > MAX_ERROR_MESSAGE:
        cut = len(message) - MAX_ERROR_MESSAGE
        message = f"{message[:MAX_ERROR_MESSAGE]}... ({cut:,} more characters not kept)"
    return message


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


class NodeNotFound(RequestRefused):
    """The execution's pipeline has no node of that id; the message lists what it has."""


class ExecutionOwned(RequestRefused):
    """Another process owns this execution and its lease has not expired (DESIGN.md §7).

    Times are Unix seconds of the owner's clock; the message gives them in UTC.
    """

    def __init__(
        self, execution_id: str, host: str, pid: int, since: float, expires_at: float
    ) -> None:
        super().__init__(
            f"execution {execution_id} is owned by process {pid} on host {host!r} "
            f"(since {_utc(since)}, lease expires {_utc(expires_at)} unless renewed); "
            "stop that process, or wait: once its lease expires, `whenflow resume` takes over"
        )
        self.execution_id = execution_id
        self.host = host
        self.pid = pid
        self.since = since
        self.expires_at = expires_at


def _utc(at: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


class ExecutionNotFound(WhenflowError):
    """No execution with this id; list them with `whenflow executions list`."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(
            f"no execution {execution_id!r}; `whenflow executions list` shows the known ones"
        )
        self.execution_id = execution_id


class ScheduleNotFound(WhenflowError):
    """No schedule with that id (`<pipeline>:<schedule id>`) is stored."""

    def __init__(self, schedule_key: str) -> None:
        super().__init__(
            f"no schedule {schedule_key!r}: schedules are named <pipeline>:<schedule id> "
            "and exist once their pipeline is published"
        )
        self.schedule_key = schedule_key


class CycleNotFound(WhenflowError):
    """A schedule has no cycle with that number (yet)."""

    def __init__(self, schedule_key: str, cycle: int) -> None:
        super().__init__(
            f"schedule {schedule_key!r} has no cycle {cycle}; "
            f"`whenflow cycles list {schedule_key}` shows its cycles"
        )
        self.schedule_key = schedule_key
        self.cycle = cycle


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


class OwnershipLost(StoreError):
    """Another process took over an execution this process was running.

    This process stops writing (its commits are fenced by the lease); the
    execution goes on in the process that took it over.
    """


class StoreSettingsError(StoreError):
    """A store setting (database URL, artifacts URL, home folder) is invalid or unreachable.

    The message names the setting and what to change; the CLI exits 2.
    """
