"""Pydantic models of the YAML documents (DESIGN.md §2): their shape, not their meaning.

These models only say which keys exist and what type each value has; the
meaning (node references, trigger expressions, templates) is checked later by
`whenflow.dsl.program` (build_program). Keys are camelCase exactly as written in YAML; every
model forbids unknown keys, so a typo is a located error, except a task block,
whose type-specific fields (`callable`, `command`...) are left for the
executor to check.

Aliases only: the models are not `populate_by_name`, on purpose, so that the
language has one spelling per key (`maxAttempts`, never `max_attempts`). The
models are only ever built from YAML data, never by field name.

Durations are parsed here (to seconds), so a bad one is reported at its place.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from whenflow.domain.definitions import (
    DEFAULT_FINALLY_GRACE_S,
    NODE_ID_PATTERN,
    PIPELINE_NAME_PATTERN,
    ParamType,
)
from whenflow.domain.durations import parse_duration
from whenflow.domain.events import EVENT_NAME, RESERVED_NODE_EVENTS
from whenflow.domain.schedule_slots import check_cron, zone
from whenflow.domain.schedules import SCHEDULE_ID_PATTERN

API_VERSION = "whenflow/v1"
SEMVER_PATTERN = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)
TASK_REF_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*@\S+$")

# Tags of the task-block union; pydantic puts them in error locations, and
# `whenflow.dsl.convert` drops them when it maps a location back to YAML.
TASK_REF_TAG = "task-ref"
TASK_INLINE_TAG = "task-inline"


def _matching(pattern: re.Pattern[str], what: str, hint: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}; {hint}")
        return value

    return AfterValidator(check)


def _text_version(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f'version {value!r} was read as a number; quote it, e.g. "1.0.0"')
    return value


def _to_seconds(value: Any) -> float:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError(f"{value!r} is not a duration; write e.g. 500ms, 2s, 10m, 1h or seconds")


def _bool_as_expression(value: Any) -> Any:
    # `startWhen: true` reads as a YAML boolean; the trigger language spells it "true".
    return ("true" if value else "false") if isinstance(value, bool) else value


NodeId = Annotated[
    str,
    _matching(
        NODE_ID_PATTERN,
        "node id",
        "use lowercase letters, digits and '_', starting with a letter or '_'",
    ),
    Field(json_schema_extra={"pattern": NODE_ID_PATTERN.pattern}),
]
Name = Annotated[
    str,
    _matching(
        PIPELINE_NAME_PATTERN,
        "name",
        "use lowercase letters, digits, '_' and '-', starting with a letter",
    ),
    Field(json_schema_extra={"pattern": PIPELINE_NAME_PATTERN.pattern}),
]
Version = Annotated[
    str,
    BeforeValidator(_text_version),
    _matching(SEMVER_PATTERN, "semantic version", 'write MAJOR.MINOR.PATCH, e.g. "1.0.0"'),
    Field(json_schema_extra={"pattern": SEMVER_PATTERN.pattern}),
]
TaskRef = Annotated[
    str,
    _matching(TASK_REF_PATTERN, "task reference", "write name@version, e.g. transform@1.2.0"),
    Field(json_schema_extra={"pattern": TASK_REF_PATTERN.pattern}),
]
Duration = Annotated[
    float,
    BeforeValidator(_to_seconds),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d)\s*)+$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "500ms, 2s, 10m, 1h30m, 1d, or a number of seconds",
        }
    ),
]


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be longer than 0, e.g. 30s or 10m")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Expression = Annotated[
    str,
    BeforeValidator(_bool_as_expression),
    WithJsonSchema({"type": ["string", "boolean"], "description": "trigger expression (§4)"}),
]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


def _custom_event(value: str) -> str:
    if not EVENT_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a custom event name; use lowercase letters, digits and '_'"
        )
    if value in RESERVED_NODE_EVENTS:
        raise ValueError(f"{value!r} is a lifecycle event whenflow publishes itself")
    return value


CustomEvent = Annotated[
    str,
    AfterValidator(_custom_event),
    Field(json_schema_extra={"pattern": EVENT_NAME.pattern}),
]


class _Schema(BaseModel):
    """Base of the document models: camelCase aliases, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel)


class ParamModel(_Schema):
    """One typed input or output: `{type, required, default, description}`."""

    type: ParamType = "any"
    required: StrictBool = False
    default: Any = None
    description: str = ""


class RetryModel(_Schema):
    """`retry:` of a node or of `spec.defaults`."""

    max_attempts: PositiveInt
    delay: Duration = 0.0
    backoff: Literal["constant", "exponential"] = "constant"
    max_delay: Duration | None = None
    retry_on: list[str] = Field(default_factory=list)


class DefaultsModel(_Schema):
    """`spec.defaults`: applied to every node that does not set its own."""

    retry: RetryModel | None = None
    timeout: Duration | None = None


class TaskRefModel(_Schema):
    """`task: {ref: name@version}`: a registered TaskDefinition."""

    ref: TaskRef


class InlineTaskModel(BaseModel):
    """`task: {type: python, callable: ...}`: extra keys are the executor's config."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel)

    type: Annotated[str, Field(min_length=1)]
    inputs: dict[str, ParamModel] | None = None
    outputs: dict[str, ParamModel] | None = None
    emits: list[CustomEvent] | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The type-specific fields, as written."""
        return dict(self.model_extra or {})


def _task_block_kind(value: Any) -> str:
    if isinstance(value, dict):
        return TASK_REF_TAG if "ref" in value else TASK_INLINE_TAG
    return TASK_REF_TAG if isinstance(value, TaskRefModel) else TASK_INLINE_TAG


TaskBlock = Annotated[
    Union[  # noqa: UP007 - the tagged members need the explicit Union form
        Annotated[TaskRefModel, Tag(TASK_REF_TAG)],
        Annotated[InlineTaskModel, Tag(TASK_INLINE_TAG)],
    ],
    Discriminator(_task_block_kind),
]


class NodeModel(_Schema):
    """One entry of `spec.nodes`."""

    id: NodeId
    description: str = ""
    task: TaskBlock
    start_when: Expression | None = None
    stop_when: Expression | None = None
    input_bindings: dict[str, Any] = Field(default_factory=dict)
    for_each: str | None = None
    each: str | None = None
    max_parallel: PositiveInt | None = None
    on_item_error: Literal["fail", "continue", "drop"] = "fail"
    allow_failure: StrictBool = False
    retry: RetryModel | None = None
    timeout: Duration | None = None
    within: Duration | None = None
    emits: list[CustomEvent] = Field(default_factory=list)
    deadline: PositiveDuration | None = None
    is_finally: StrictBool = Field(default=False, alias="finally")


class PipelineMetadata(_Schema):
    """`metadata` of a Pipeline: the version defaults to 0.1.0."""

    name: Name
    version: Version = "0.1.0"
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class TaskMetadata(_Schema):
    """`metadata` of a Task: a task is referenced as name@version, so both are required."""

    name: Name
    version: Version
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


def _positive_seconds(value: float) -> float:
    if value <= 0:
        raise ValueError("`every` must be longer than 0s; write e.g. 30s, 1m or 1h")
    return value


def _time_zone(value: str) -> str:
    zone(value)
    return value


def _date_time(value: Any) -> Any:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date; write ISO 8601, e.g. 2026-01-31 or "
                "2026-01-31T09:00:00+08:00 (without an offset: in the schedule's timezone)"
            ) from None
    return value


Every = Annotated[Duration, AfterValidator(_positive_seconds)]
CronExpression = Annotated[str, AfterValidator(check_cron)]
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]
DateTime = Annotated[
    dt.datetime,
    BeforeValidator(_date_time),
    WithJsonSchema({"type": "string", "description": "ISO 8601 date or date-time"}),
]
ScheduleId = Annotated[
    str,
    _matching(
        re.compile(SCHEDULE_ID_PATTERN),
        "schedule id",
        "use lowercase letters, digits, '_' and '-', e.g. nightly",
    ),
]


class ScheduleModel(_Schema):
    """One entry of `spec.schedules`: `cron` (+ `timezone`) or `every`."""

    id: ScheduleId | None = None
    cron: CronExpression | None = None
    every: Every | None = None
    timezone: TimeZoneName = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)
    overlap: Literal["skip", "queue", "cancelPrevious"] = "skip"
    catch_up: Literal["none", "latest", "all"] = "none"
    max_catch_up: PositiveInt | None = None
    start: DateTime | None = None
    end: DateTime | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleModel:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule sets exactly one of `cron` and `every`")
        return self


NotifyEvent = Literal["failed", "completed", "stopped", "waiting"]


class WebhookChannelModel(_Schema):
    """`webhook:` of a notify rule: a JSON POST, HMAC-SHA256-signed when a secret is set."""

    url: Annotated[str, Field(min_length=1)]
    signing_secret: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class SlackChannelModel(_Schema):
    """`slack:` of a notify rule: a Slack-compatible incoming webhook."""

    url: Annotated[str, Field(min_length=1)]


class EmailChannelModel(_Schema):
    """`email:` of a notify rule: a message over SMTP through a connection."""

    to: Annotated[list[Annotated[str, Field(min_length=3)]], Field(min_length=1)]
    connection: Annotated[str, Field(min_length=1)] = "smtp"
    sender: str | None = Field(default=None, alias="from")
    subject: str | None = None


class NotifyModel(_Schema):
    """One entry of `spec.notify`: `on` and exactly one channel."""

    on: Annotated[list[NotifyEvent], Field(min_length=1)]
    webhook: WebhookChannelModel | None = None
    slack: SlackChannelModel | None = None
    email: EmailChannelModel | None = None

    @model_validator(mode="after")
    def _one_channel(self) -> NotifyModel:
        chosen = [c for c in (self.webhook, self.slack, self.email) if c is not None]
        if len(chosen) != 1:
            raise ValueError("a notify rule sets exactly one of `webhook`, `slack` and `email`")
        return self


class WebhookTriggerModel(_Schema):
    """`webhook:` of a start trigger: the key of `POST /api/v1/hooks/{key}` (a secret)."""

    key: Annotated[str, Field(min_length=1)]


EndStatus = Literal["completed", "failed", "stopped", "cancelled"]


class AfterTriggerModel(_Schema):
    """`after:` of a start trigger: an execution of `pipeline` ended with one of `status`."""

    pipeline: Annotated[str, Field(min_length=1)]
    status: Annotated[list[EndStatus], Field(min_length=1)] = Field(
        default_factory=lambda: list[EndStatus](["completed"])
    )


class TriggerModel(_Schema):
    """One entry of `spec.triggers`: a webhook or another pipeline's end (exactly one),
    and the inputs it starts the pipeline with (templates over `body` and `headers`,
    or over `upstream`)."""

    webhook: WebhookTriggerModel | None = None
    after: AfterTriggerModel | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> TriggerModel:
        if (self.webhook is None) == (self.after is None):
            raise ValueError("a trigger sets exactly one of `webhook` and `after`")
        return self


class PipelineSpecModel(_Schema):
    """`spec` of a Pipeline."""

    inputs: dict[str, ParamModel] = Field(default_factory=dict)
    defaults: DefaultsModel = Field(default_factory=DefaultsModel)
    concurrency: PositiveInt | None = None
    fail_fast: StrictBool = False
    stop_when: Expression | None = None
    timeout: PositiveDuration | None = None
    finally_grace: Duration = DEFAULT_FINALLY_GRACE_S
    nodes: Annotated[list[NodeModel], Field(min_length=1)]
    outputs: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleModel] = Field(default_factory=list)
    notify: list[NotifyModel] = Field(default_factory=list)
    triggers: list[TriggerModel] = Field(default_factory=list)


class TaskSpecModel(BaseModel):
    """`spec` of a Task: `type`, its type-specific fields, and the signature."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel)

    type: Annotated[str, Field(min_length=1)]
    description: str = ""
    inputs: dict[str, ParamModel] = Field(default_factory=dict)
    outputs: dict[str, ParamModel] = Field(default_factory=dict)
    emits: list[CustomEvent] = Field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        """The type-specific fields, as written."""
        return dict(self.model_extra or {})


class PipelineDocument(_Schema):
    """A whole `kind: Pipeline` document."""

    model_config = ConfigDict(title="whenflow Pipeline")

    api_version: Literal["whenflow/v1"]
    kind: Literal["Pipeline"]
    metadata: PipelineMetadata
    spec: PipelineSpecModel


class TaskDocument(_Schema):
    """A whole `kind: Task` document: a reusable, versioned TaskDefinition."""

    model_config = ConfigDict(title="whenflow Task")

    api_version: Literal["whenflow/v1"]
    kind: Literal["Task"]
    metadata: TaskMetadata
    spec: TaskSpecModel
