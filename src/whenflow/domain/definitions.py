"""Pipeline and task definitions after loading: frozen, validated, free of YAML.

The DSL (`whenflow.dsl`) turns a YAML document into these; the engine runs them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from whenflow.domain.schedules import NotifyRule, Schedule, StartTrigger

NODE_ID_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")
PIPELINE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")

ParamType = Literal["string", "number", "integer", "boolean", "object", "array", "file", "any"]
PARAM_TYPES: tuple[str, ...] = (
    "string",
    "number",
    "integer",
    "boolean",
    "object",
    "array",
    "file",
    "any",
)

_MISSING: Any = object()
DEFAULT_FINALLY_GRACE_S = 60.0
"""How long finally nodes may run after a cancel or the pipeline timeout (`spec.finallyGrace`)."""


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One typed input or output of a pipeline or task signature."""

    type: ParamType = "any"
    required: bool = False
    default: Any = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class TaskSignature:
    """Typed inputs and outputs; `None` on a TaskSpec means "not declared, accept anything".

    `emits` names the custom events the task may publish (`ctx.emit`), DESIGN.md §5.
    """

    inputs: Mapping[str, ParamSpec] = field(default_factory=dict)
    outputs: Mapping[str, ParamSpec] = field(default_factory=dict)
    emits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a node runs: an executor type and its type-specific configuration.

    `config` holds the fields of the task block other than `type`/`ref`
    (for python: `callable`, `isolation`; for shell: `command`, `script`, `env`...).
    `signature` is known when the task comes from a TaskDefinition or `@whenflow.task`.
    `base_dir` is the folder of the pipeline file, against which an executor
    resolves a relative path in its config (`sql`'s `file:`); None when the
    pipeline was not read from a file (relative paths then start at the cwd).
    It is where the task was read, not what it is: equality ignores it.
    """

    type: str
    config: Mapping[str, Any] = field(default_factory=dict)
    signature: TaskSignature | None = None
    ref: str | None = None
    base_dir: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """A reusable, versioned task (`kind: Task`), referenced as `name@version`."""

    name: str
    version: str
    task: TaskSpec
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


RETRY_HINT_CAP_S = 300.0
"""The longest an error's retry hint (Retry-After) makes a node wait without `maxDelay`."""


class Backoff(StrEnum):
    CONSTANT = "constant"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a node gets and how long it waits between them."""

    max_attempts: int = 1
    delay_s: float = 0.0
    backoff: Backoff = Backoff.CONSTANT
    max_delay_s: float | None = None
    retry_on: tuple[str, ...] = ()  # exception type names; empty means every error

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("retry.maxAttempts must be at least 1")
        if self.delay_s < 0:
            raise ValueError("retry.delay must be >= 0")

    def delay_after(self, attempt: int, hint_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        `hint_s` is how long the attempt's error asked to wait (an HTTP 429's
        Retry-After): the delay is at least that, still capped by `max_delay_s`
        (or by RETRY_HINT_CAP_S when there is no `max_delay_s`).
        """
        delay = self.delay_s
        if self.backoff is Backoff.EXPONENTIAL:
            delay = self.delay_s * (2 ** (attempt - 1))
        if hint_s is not None and hint_s > delay:
            delay = min(hint_s, RETRY_HINT_CAP_S)
        if self.max_delay_s is not None:
            delay = min(delay, self.max_delay_s)
        return delay

    def retries(self, error_type: str) -> bool:
        return not self.retry_on or error_type in self.retry_on


class OnItemError(StrEnum):
    FAIL = "fail"
    CONTINUE = "continue"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class NodeDefinition:
    """One node: what it runs and when it starts and stops."""

    id: str
    task: TaskSpec
    start_when: str | None = None
    stop_when: str | None = None
    input_bindings: Mapping[str, Any] = field(default_factory=dict)
    for_each: str | None = None
    each: str | None = None
    """`event:<node>.<custom event>`: one instance of the task per such event."""
    max_parallel: int | None = None
    on_item_error: OnItemError = OnItemError.FAIL
    allow_failure: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float | None = None
    within_s: float | None = None
    description: str = ""
    emits: tuple[str, ...] = ()
    """Custom events the node's task may publish, besides those its task declares."""
    deadline_s: float | None = None
    """Bounds the node over all its attempts, from its first attempt's start (seconds)."""
    is_finally: bool = False
    """`finally: true`: cleanup that runs once the rest of the execution is done or ending."""


@dataclass(frozen=True, slots=True)
class PipelineDefinition:
    """A whole pipeline, with every node's defaults already applied."""

    name: str
    version: str
    nodes: tuple[NodeDefinition, ...]
    description: str = ""
    inputs: Mapping[str, ParamSpec] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int | None = None
    fail_fast: bool = False
    stop_when: str | None = None
    timeout_s: float | None = None
    """`spec.timeout`: bounds the execution from its creation (seconds)."""
    finally_grace_s: float = DEFAULT_FINALLY_GRACE_S
    """`spec.finallyGrace`: how long finally nodes may run after a cancel or a timeout."""
    source_path: str | None = None
    source_text: str | None = None
    schedules: tuple[Schedule, ...] = ()
    """`spec.schedules`, each with its id (given, or `schedule-<n>` by position)."""
    notify: tuple[NotifyRule, ...] = ()
    """`spec.notify`: who is told of which outcomes."""
    triggers: tuple[StartTrigger, ...] = ()
    """`spec.triggers`: what else starts it (a webhook, another pipeline's end)."""

    def node(self, node_id: str) -> NodeDefinition:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes)
