"""`spec.schedules` and `spec.notify` in the YAML: compiled, round-tripped, located errors."""

from __future__ import annotations

import datetime as dt

import pytest

from whenflow.domain.errors import DefinitionErrors
from whenflow.domain.schedules import (
    AfterTrigger,
    CatchUp,
    Channel,
    NotifyOn,
    Overlap,
    Schedule,
)
from whenflow.dsl.emit import to_yaml
from whenflow.dsl.load import load_program_text
from whenflow.dsl.program import PipelineProgram
from whenflow.testing import InlineRunner

RUNNER = InlineRunner({})
HEADER = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: p}
spec:
  nodes:
    - {id: load, task: {type: noop}}
"""
ISSUE_EXAMPLE = """\
  schedules:
    - {cron: "0 9 * * 1-5", timezone: Asia/Shanghai, inputs: {market: sh}, overlap: skip, catchUp: latest}
    - {every: 1m}
    - {id: nightly, cron: "0 2 * * *", overlap: cancelPrevious, catchUp: all, maxCatchUp: 3,
       start: "2026-01-01", end: "2026-12-31T23:00:00+00:00"}
  notify:
    - on: [failed, waiting]
      webhook: {url: "{{ secret('ALERT_URL') }}", signingSecret: "{{ secret('ALERT_SIGNING') }}"}
    - on: [failed]
      slack: {url: "{{ secret('SLACK_URL') }}"}
    - on: [failed, completed]
      email: {to: [ops@example.com], connection: smtp}
"""


def load(extra: str) -> PipelineProgram:
    return load_program_text(HEADER + extra, RUNNER, path="p.yaml")


def issues(extra: str) -> list[str]:
    with pytest.raises(DefinitionErrors) as info:
        load(extra)
    return [str(i) for i in info.value.issues]


def test_the_issue_example_compiles_into_schedules_and_rules() -> None:
    definition = load(ISSUE_EXAMPLE).definition
    first, second, nightly = definition.schedules
    assert first == Schedule(
        id="schedule-1",
        cron="0 9 * * 1-5",
        timezone="Asia/Shanghai",
        inputs={"market": "sh"},
        overlap=Overlap.SKIP,
        catch_up=CatchUp.LATEST,
    )
    assert (second.id, second.every_s, second.timezone) == ("schedule-2", 60.0, "UTC")
    assert nightly.overlap is Overlap.CANCEL_PREVIOUS
    assert (nightly.catch_up, nightly.max_catch_up) == (CatchUp.ALL, 3)
    # A date without an offset is read in the schedule's time zone.
    assert nightly.start == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert nightly.end == dt.datetime(2026, 12, 31, 23, tzinfo=dt.UTC)
    webhook, slack, email = definition.notify
    assert webhook.on == (NotifyOn.FAILED, NotifyOn.WAITING)
    assert webhook.channel is Channel.WEBHOOK
    assert webhook.settings["signingSecret"] == "{{ secret('ALERT_SIGNING') }}"
    assert (slack.channel, slack.settings) == (Channel.SLACK, {"url": "{{ secret('SLACK_URL') }}"})
    assert email.settings == {"to": ["ops@example.com"], "connection": "smtp"}


def test_schedules_and_rules_survive_the_yaml_round_trip() -> None:
    definition = load(ISSUE_EXAMPLE).definition
    again = load_program_text(to_yaml(definition), RUNNER, path="again.yaml").definition
    assert again.schedules == definition.schedules
    assert again.notify == definition.notify


def test_a_start_without_offset_is_in_the_schedule_time_zone() -> None:
    extra = '  schedules:\n    - {cron: "0 9 * * *", timezone: Asia/Shanghai, start: "2026-01-01T08:00"}\n'
    (schedule,) = load(extra).definition.schedules
    assert schedule.start == dt.datetime(2026, 1, 1, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("entry", "needle", "expected"),
    [
        ("{every: 0s}", "0s", "spec.schedules[0].every: `every` must be longer than 0s"),
        ('{cron: "61 * * * *"}', '"61', "spec.schedules[0].cron: '61 * * * *' is not a cron"),
        (
            '{cron: "* * * * *", timezone: Mars/Olympus}',
            "Mars",
            "spec.schedules[0].timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            "{every: 1m, catchup: all}",
            "catchup",
            "spec.schedules[0].catchup: unknown field 'catchup' (did you mean 'catchUp'?)",
        ),
        ("{every: 1m, overlap: wait}", "wait", "spec.schedules[0].overlap: must be 'skip'"),
        ("{timezone: UTC}", "{", "spec.schedules[0]: a schedule sets exactly one of"),
        ('{every: 1m, start: "soon"}', '"soon', "spec.schedules[0].start: 'soon' is not a date"),
        ("{every: 1m, maxCatchUp: 0}", "0}", "spec.schedules[0].maxCatchUp:"),
    ],
)
def test_bad_schedules_are_located(entry: str, needle: str, expected: str) -> None:
    line = f"    - {entry}"
    found = issues(f"  schedules:\n{line}\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"p.yaml:8:{line.index(needle) + 1}: {expected}"), found[0]


def test_duplicate_schedule_ids_are_located_at_the_second() -> None:
    found = issues("  schedules:\n    - {id: a, every: 1m}\n    - {id: a, every: 2m}\n")
    assert found == [
        "p.yaml:9:12: spec.schedules[1].id: duplicate schedule id 'a' (first at "
        "spec.schedules[0]); give each schedule its own `id`"
    ]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("{on: [failed]}", "a notify rule sets exactly one of"),
        ("{on: [exploded], slack: {url: x}}", "spec.notify[0].on[0]: must be 'failed'"),
        ("{on: [failed], slack: {url: x, channel: y}}", "unknown field 'channel'"),
        ("{on: [failed], email: {to: []}}", "spec.notify[0].email.to: must have at least 1"),
    ],
)
def test_bad_notify_rules_are_located(rule: str, expected: str) -> None:
    found = issues(f"  notify:\n    - {rule}\n")
    assert len(found) == 1, found
    assert found[0].startswith("p.yaml:8:"), found[0]
    assert expected in found[0], found[0]


TRIGGERS = """\
  triggers:
    - webhook: {key: "{{ secret('HOOK_KEY') }}"}
      inputs: {symbol: "{{ body.symbol }}", source: "{{ headers['x-source'] }}"}
"""


def test_webhook_triggers_compile_and_survive_the_yaml_round_trip() -> None:
    definition = load(TRIGGERS).definition
    (trigger,) = definition.triggers
    assert trigger.key == "{{ secret('HOOK_KEY') }}"
    assert trigger.inputs == {"symbol": "{{ body.symbol }}", "source": "{{ headers['x-source'] }}"}
    again = load_program_text(to_yaml(definition), RUNNER, path="again.yaml").definition
    assert again.triggers == definition.triggers


def test_a_trigger_without_a_webhook_key_is_located() -> None:
    found = issues("  triggers:\n    - {webhook: {key: ''}, inputs: {}}\n")
    assert any("p.yaml:8" in i and "key" in i for i in found), found
    both = issues("  triggers:\n    - {webhook: {key: k}, after: {pipeline: etl}}\n")
    assert any("exactly one of `webhook` and `after`" in i for i in both), both
    status = issues("  triggers:\n    - {after: {pipeline: etl, status: [done]}}\n")
    assert any("status" in i for i in status), status


def test_after_triggers_default_to_completed_and_survive_the_round_trip() -> None:
    definition = load(
        "  triggers:\n"
        "    - {after: {pipeline: etl}, inputs: {path: '{{ upstream.outputs.path }}'}}\n"
        "    - {after: {pipeline: etl, status: [failed, cancelled, failed]}}\n"
    ).definition
    first, second = definition.triggers
    assert first == AfterTrigger("etl", ("completed",), {"path": "{{ upstream.outputs.path }}"})
    assert second == AfterTrigger("etl", ("failed", "cancelled"), {})
    again = load_program_text(to_yaml(definition), RUNNER, path="again.yaml").definition
    assert again.triggers == definition.triggers
