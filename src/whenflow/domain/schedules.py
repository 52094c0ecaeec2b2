"""Schedules and notifications of a pipeline, as the YAML declares them (DESIGN.md §12).

`spec.schedules` compiles to `Schedule`s and `spec.notify` to `NotifyRule`s;
both ride on the `PipelineDefinition`. The slot arithmetic lives in
`whenflow.domain.schedule_slots`; firing them is the scheduler's job
(`whenflow.services.scheduler`), sending notifications the notifier's
(`whenflow.services.notifications`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SCHEDULE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


class Overlap(StrEnum):
    """What a due slot does while the previous cycle's execution still runs."""

    SKIP = "skip"
    """The slot is skipped (no execution, no cycle)."""
    QUEUE = "queue"
    """The slot waits; it fires once the previous cycle's execution has ended."""
    CANCEL_PREVIOUS = "cancelPrevious"
    """The previous cycle's execution is cancelled and the slot fires at once."""


class CatchUp(StrEnum):
    """Which slots missed while no scheduler ran (downtime) still fire."""

    NONE = "none"
    LATEST = "latest"
    ALL = "all"


SCHEDULE_SYSTEM_NAMES = ("schedule", "cycle", "logicalDate")
"""The `system.*` values of an execution a schedule started: its schedule
(`<pipeline>:<id>`), its cycle number and its slot (ISO 8601, UTC)."""

DEFAULT_MAX_CATCH_UP = 100
"""The most missed slots `catchUp: all` fires when `maxCatchUp` is not set."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """One entry of `spec.schedules`: a cron expression or a fixed period.

    Exactly one of `cron` (five or six croniter fields, read in `timezone`)
    and `every_s` (seconds, > 0; slots at `start` + k·every, or the Unix epoch
    + k·every without a start) is set. `start`/`end` bound the slots (aware
    datetimes, inclusive). `inputs` are the execution's inputs.

    Raises:
        ValueError: neither or both of cron/every, every <= 0, end before start,
            maxCatchUp < 1.
    """

    id: str
    cron: str | None = None
    every_s: float | None = None
    timezone: str = "UTC"
    inputs: Mapping[str, Any] = field(default_factory=dict)
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.NONE
    max_catch_up: int = DEFAULT_MAX_CATCH_UP
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("a schedule sets exactly one of `cron` and `every`")
        if self.every_s is not None and self.every_s <= 0:
            raise ValueError("`every` must be longer than 0s")
        if self.max_catch_up < 1:
            raise ValueError("`maxCatchUp` must be at least 1")
        for name, value in (("start", self.start), ("end", self.end)):
            if value is not None and value.tzinfo is None:
                raise ValueError(f"`{name}` must be an aware datetime")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("`end` is before `start`")

    def to_json(self) -> dict[str, Any]:
        """The spec as stored in the `schedules` table (YAML spellings, ISO 8601 dates)."""
        data: dict[str, Any] = {"id": self.id, "timezone": self.timezone}
        if self.cron is not None:
            data["cron"] = self.cron
        if self.every_s is not None:
            data["every"] = self.every_s
        data.update(
            inputs=dict(self.inputs),
            overlap=self.overlap.value,
            catchUp=self.catch_up.value,
            maxCatchUp=self.max_catch_up,
        )
        if self.start is not None:
            data["start"] = self.start.isoformat()
        if self.end is not None:
            data["end"] = self.end.isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schedule:
        """The inverse of `to_json`; raises ValueError (or KeyError) for a bad spec."""
        start, end = data.get("start"), data.get("end")
        return cls(
            id=str(data["id"]),
            cron=data.get("cron"),
            every_s=None if data.get("every") is None else float(data["every"]),
            timezone=str(data.get("timezone", "UTC")),
            inputs=dict(data.get("inputs") or {}),
            overlap=Overlap(data.get("overlap", Overlap.SKIP.value)),
            catch_up=CatchUp(data.get("catchUp", CatchUp.NONE.value)),
            max_catch_up=int(data.get("maxCatchUp", DEFAULT_MAX_CATCH_UP)),
            start=None if start is None else dt.datetime.fromisoformat(start),
            end=None if end is None else dt.datetime.fromisoformat(end),
        )


class NotifyOn(StrEnum):
    """The execution outcomes a notification rule listens for."""

    FAILED = "failed"
    COMPLETED = "completed"
    STOPPED = "stopped"
    """The execution was cancelled (stopped by someone)."""
    WAITING = "waiting"
    """An approval node waits for a decision."""


class Channel(StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    EMAIL = "email"


@dataclass(frozen=True, slots=True)
class NotifyRule:
    """One entry of `spec.notify`: when, and through which channel, to tell someone.

    `settings` holds the channel's fields as written (templates unrendered):
    webhook `{url, signingSecret?, headers?}`, slack `{url}`, email
    `{to, connection?, from?, subject?}`.
    """

    on: tuple[NotifyOn, ...]
    channel: Channel
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookTrigger:
    """One `spec.triggers` entry with `webhook:`: `POST /api/v1/hooks/{key}` starts the
    pipeline. `key` and `inputs` are as written (templates unrendered): the key is
    usually `{{ secret('HOOK_KEY') }}`; the inputs read `body` and `headers`."""

    key: str
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AfterTrigger:
    """One `spec.triggers` entry with `after:`: the end of an execution of `pipeline` with
    one of `statuses` starts this pipeline. `inputs` are templates over `upstream`
    (`{executionId, pipeline, version, status, outputs, error}`)."""

    pipeline: str
    statuses: tuple[str, ...] = ("completed",)
    inputs: Mapping[str, Any] = field(default_factory=dict)


StartTrigger = WebhookTrigger | AfterTrigger
