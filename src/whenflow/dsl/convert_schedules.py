"""`spec.schedules` and `spec.notify`: from the pydantic models to domain values (DESIGN.md §12)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whenflow.domain.errors import DefinitionIssue
from whenflow.domain.schedule_slots import zone
from whenflow.domain.schedules import (
    DEFAULT_MAX_CATCH_UP,
    CatchUp,
    Channel,
    NotifyOn,
    NotifyRule,
    Overlap,
    Schedule,
)
from whenflow.dsl.schema import NotifyModel, ScheduleModel
from whenflow.dsl.yaml_source import SourceMap, YamlPath, field_name


def default_schedule_id(index: int) -> str:
    """The id of the schedule at `index` of `spec.schedules` when it gives none."""
    return f"schedule-{index + 1}"


def schedules_of(
    models: Sequence[ScheduleModel], source: SourceMap
) -> tuple[tuple[Schedule, ...], list[DefinitionIssue]]:
    """`spec.schedules` as domain schedules, and the located problems found on the way."""
    schedules: list[Schedule] = []
    issues: list[DefinitionIssue] = []
    seen: dict[str, int] = {}
    for index, model in enumerate(models):
        schedule_id = model.id or default_schedule_id(index)
        path: YamlPath = ("spec", "schedules", index)
        if schedule_id in seen:
            issues.append(
                DefinitionIssue(
                    f"duplicate schedule id {schedule_id!r} (first at spec.schedules"
                    f"[{seen[schedule_id]}]); give each schedule its own `id`",
                    source.locate((*path, "id")),
                    field_name((*path, "id")),
                )
            )
            continue
        seen[schedule_id] = index
        tz = zone(model.timezone)
        start, end = (
            None if d is None else d if d.tzinfo is not None else d.replace(tzinfo=tz)
            for d in (model.start, model.end)
        )
        try:
            schedules.append(
                Schedule(
                    id=schedule_id,
                    cron=model.cron,
                    every_s=model.every,
                    timezone=model.timezone,
                    inputs=dict(model.inputs),
                    overlap=Overlap(model.overlap),
                    catch_up=CatchUp(model.catch_up),
                    max_catch_up=model.max_catch_up or DEFAULT_MAX_CATCH_UP,
                    start=start,
                    end=end,
                )
            )
        except ValueError as exc:
            issues.append(DefinitionIssue(str(exc), source.locate(path), field_name(path)))
    return tuple(schedules), issues


def notify_rules(models: Sequence[NotifyModel]) -> tuple[NotifyRule, ...]:
    """`spec.notify` as domain rules, one per channel block."""
    rules = []
    for model in models:
        on = tuple(dict.fromkeys(NotifyOn(o) for o in model.on))
        if model.webhook is not None:
            settings: dict[str, Any] = {"url": model.webhook.url, "headers": model.webhook.headers}
            if model.webhook.signing_secret is not None:
                settings["signingSecret"] = model.webhook.signing_secret
            rules.append(NotifyRule(on, Channel.WEBHOOK, settings))
        elif model.slack is not None:
            rules.append(NotifyRule(on, Channel.SLACK, {"url": model.slack.url}))
        elif model.email is not None:
            email = model.email
            settings = {"to": list(email.to), "connection": email.connection}
            if email.sender is not None:
                settings["from"] = email.sender
            if email.subject is not None:
                settings["subject"] = email.subject
            rules.append(NotifyRule(on, Channel.EMAIL, settings))
    return tuple(rules)
