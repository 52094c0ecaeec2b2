"""`whenflow validate`: effective triggers, or `FILE:LINE:COL: message` and exit 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import EXAMPLES, run_cli, write_pipeline

HEADER = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata:
  name: probe
  version: 0.1.0
spec:
  nodes:
"""
LOCATION = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


def _write(tmp_path: Path, nodes: str) -> Path:
    """A pipeline whose node list is `nodes` (already indented by four spaces)."""
    path = tmp_path / "probe.yaml"
    path.write_text(HEADER + nodes)
    return path


def _errors(tmp_path: Path, path: Path) -> list[tuple[int, int, str]]:
    """Run validate, check it failed properly, return (line, col, message) of each error."""
    proc = run_cli(tmp_path, "validate", path)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout == ""
    found = []
    for line in proc.stderr.splitlines():
        match = LOCATION.match(line)
        assert match, f"not FILE:LINE:COL: message: {line!r}"
        assert match["file"] == str(path)
        found.append((int(match["line"]), int(match["col"]), match["message"]))
    assert found
    return found


def test_validate_prints_every_nodes_effective_start_when(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "validate", EXAMPLES / "fan_out_fan_in.yaml")

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "pipeline fan_out_fan_in 1.0.0 is valid" in lines[0]
    triggers: dict[str, str] = {}
    for line in lines[1:]:
        node_id, _, trigger = line.partition("startWhen:")
        triggers[node_id.strip()] = trigger.strip()
    assert triggers == {
        "list_files": "event:pipeline.started",
        "count_words": "event:pipeline.started && event:list_files.completed",
        "total": "event:pipeline.started && event:count_words.completed",
    }


def test_validate_json_lists_explicit_and_default_triggers(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "validate", EXAMPLES / "branch_and_join.yaml", "--json")

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["valid"] is True
    assert report["pipeline"] == "branch_and_join"
    triggers = report["startWhen"]
    assert set(triggers) == {"check", "manual_review", "auto_approve", "join"}
    assert triggers["check"] == "event:pipeline.started"
    assert triggers["manual_review"] == "event:check.completed && {{ check.large }}"
    assert "settled(manual_review, auto_approve)" in triggers["join"]


def test_malformed_yaml(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: a\n"  # line 8
        "      task: {type: noop\n"  # line 9: unclosed flow mapping
        "    - id: b\n",  # line 10: where the parser notices
    )

    [(line, col, message)] = _errors(tmp_path, path)

    assert line in (9, 10)
    assert col >= 1
    assert "expected" in message


def test_unknown_node_in_a_condition(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: a\n"
        "      task: {type: noop}\n"
        "    - id: b\n"
        '      startWhen: "event:a.completed && {{ ghost.value > 1 }}"\n'  # line 11
        "      task: {type: noop}\n",
    )

    [(line, col, message)] = _errors(tmp_path, path)

    assert line == 11
    # The column points at the `{{`, inside the quoted string.
    assert col == len('      startWhen: "event:a.completed && ') + 1
    assert "unknown node 'ghost'" in message
    assert "startWhen" in message


def test_unknown_node_in_an_event_pattern(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: alpha\n"
        "      task: {type: noop}\n"
        "    - id: b\n"
        '      startWhen: "event:alpah.completed"\n'  # line 11
        "      task: {type: noop}\n",
    )

    [(line, _, message)] = _errors(tmp_path, path)

    assert line == 11
    assert "alpah" in message
    assert "did you mean 'alpha'" in message


def test_unknown_node_in_a_binding(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: a\n"
        "      task: {type: noop}\n"
        "      inputBindings:\n"
        '        x: "{{ nobody.value }}"\n',  # line 11
    )

    [(line, _, message)] = _errors(tmp_path, path)

    assert line == 11
    assert "unknown node 'nobody'" in message


def test_syntax_error_in_start_when(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: a\n"
        "      task: {type: noop}\n"
        "    - id: b\n"
        '      startWhen: "event:a.completed && && true"\n'  # line 11
        "      task: {type: noop}\n",
    )

    [(line, col, message)] = _errors(tmp_path, path)

    assert line == 11
    # The column is that of the second `&&`, inside the quoted string.
    assert col == len('      startWhen: "event:a.completed && ') + 1
    assert "syntax error" in message


def test_binding_to_an_input_the_task_does_not_declare(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: a\n"
        "      task: {ref: transform@1.2.0}\n"
        "      inputBindings:\n"
        "        path: /tmp/rows.jsonl\n"
        "        bogus: 3\n",  # line 12
    )

    proc = run_cli(tmp_path, "validate", path, "--tasks", EXAMPLES / "tasks")
    assert proc.returncode == 2
    match = LOCATION.match(proc.stderr.strip())
    assert match, proc.stderr
    assert (match["file"], match["line"]) == (str(path), "12")
    assert "'bogus'" in match["message"]
    assert "declared: path" in match["message"]


def test_binding_to_a_parameter_a_plain_callable_does_not_take(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: a\n"
        "      task: {type: python, callable: examples.flaky:report}\n"
        "      inputBindings:\n"
        "        flaky_attempts: 1\n"
        "        slow_timed_out: true\n"
        "        bogus: 3\n",  # line 13
    )

    [(line, _, message)] = _errors(tmp_path, path)

    assert line == 13
    assert "bogus" in message


ESCAPES = [
    pytest.param("{{ ''.__class__.__mro__ }}", id="mro"),
    pytest.param("{{ cycler.__init__.__globals__ }}", id="globals"),
]


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escape_in_a_binding_is_rejected(tmp_path: Path, template: str) -> None:
    path = _write(
        tmp_path,
        f'    - id: a\n      task: {{type: noop}}\n      inputBindings:\n        x: "{template}"\n',
    )

    [(line, _, message)] = _errors(tmp_path, path)

    assert line == 11
    assert "not allowed" in message


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escape_in_a_shell_command_is_rejected(tmp_path: Path, template: str) -> None:
    path = _write(
        tmp_path,
        f'    - id: a\n      task: {{type: shell, command: ["echo", "{template}"]}}\n',
    )

    [(line, _, message)] = _errors(tmp_path, path)

    assert line == 9
    assert "not allowed" in message


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escape_in_a_trigger_is_rejected(tmp_path: Path, template: str) -> None:
    path = _write(
        tmp_path,
        "    - id: a\n"
        "      task: {type: noop}\n"
        "    - id: b\n"
        f'      startWhen: "event:a.completed && {template}"\n'  # line 11
        "      task: {type: noop}\n",
    )

    [(line, _, message)] = _errors(tmp_path, path)

    assert line == 11
    assert "not allowed" in message


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escape_never_runs(tmp_path: Path, template: str) -> None:
    """Whatever validate prints, `run` must not start an execution with such a template."""
    path = write_pipeline(
        tmp_path,
        "escape.yaml",
        f"""
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {{name: escape, version: 0.1.0}}
        spec:
          nodes:
            - id: a
              task: {{type: noop}}
              inputBindings:
                x: "{template}"
        """,
    )

    proc = run_cli(tmp_path, "run", path, "--json")

    assert proc.returncode == 2
    assert "not allowed" in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "whenflow.db").exists()


def test_other_forbidden_or_broken_templates_in_bindings(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: a\n"
        "      task: {type: noop}\n"
        "      inputBindings:\n"
        '        x: "{{ 1 + }}"\n'  # line 11
        "        y: \"{{ 'a' | attr('upper') }}\"\n"  # line 12
        "        z: \"{% include 'x' %}\"\n",  # line 13
    )

    found = _errors(tmp_path, path)

    assert [(line, col) for line, col, _ in found] == [(11, 12), (12, 12), (13, 12)]
    assert "template syntax error" in found[0][2]
    assert "'attr' filter is not allowed" in found[1][2]
    assert "'include' statements are not allowed" in found[2][2]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: a\n"
        "      task: {type: noop}\n"
        '      startWhen: "event:nowhere.completed"\n'  # line 10
        "    - id: b\n"
        '      startWhen: "event:a.completed &&"\n'  # line 12
        "      task: {type: noop}\n",
    )

    found = _errors(tmp_path, path)

    assert [line for line, _, _ in found] == [10, 12]


def test_validate_does_not_create_the_store(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "validate", EXAMPLES / "retry_timeout.yaml")

    assert proc.returncode == 0
    assert not (tmp_path / "whenflow.db").exists()


def test_problems_of_every_phase_are_reported_together(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: extract\n"
        "      task: {type: noop}\n"
        "    - id: typo\n"
        "      stopwhen: pipeline.started\n"  # line 11: schema
        "      task: {ref: loader@1.0.0}\n"
        "    - id: load\n"
        "      task: {ref: loader@1.0.0}\n"  # line 14: reference
        "    - id: report\n"
        '      startWhen: "event:extract.complete"\n'  # line 16: trigger
        "      task: {type: noop}\n",
    )

    found = _errors(tmp_path, path)

    assert [(line, col) for line, col, _ in found] == [(11, 7), (14, 19), (16, 19)]
    assert "unknown field 'stopwhen' (did you mean 'stopWhen'?)" in found[0][2]
    assert "unknown task 'loader@1.0.0'" in found[1][2]
    assert "did you mean extract.completed?" in found[2][2]


def test_events_declared_by_a_decorated_task_validate_and_typos_do_not(tmp_path: Path) -> None:
    (tmp_path / "ticking.py").write_text(
        "import whenflow\n\n"
        "@whenflow.task(emits=['tick'])\n"
        "def feed(ctx) -> None:\n"
        "    ctx.emit('tick', {})\n"
    )
    nodes = (
        "    - {id: src, task: {type: python, callable: ticking:feed}}\n"
        '    - {id: on_tick, startWhen: "event:src.%s", task: {type: noop}}\n'
    )
    good = _write(tmp_path, nodes % "tick")
    assert run_cli(tmp_path, "validate", good).returncode == 0
    bad = _write(tmp_path, nodes % "tock")
    [(line, _, message)] = _errors(tmp_path, bad)
    assert line == 9
    assert "'src' never publishes 'tock' (did you mean src.tick?)" in message


def test_a_template_in_shell_code_is_a_warning_and_the_file_is_valid(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "    - id: greet\n"
        '      task: {type: shell, command: ["sh", "-c", "echo {{ pipeline.input.who }}"]}\n',
    )
    proc = run_cli(tmp_path, "validate", path)
    assert proc.returncode == 0, proc.stderr
    assert "pipeline probe 0.1.0 is valid" in proc.stdout
    [warning] = proc.stderr.splitlines()
    assert warning.startswith(f"{path}:9:49: warning: nodes.greet.task.command.2: ")
    assert "turns data into code" in warning

    shown = json.loads(run_cli(tmp_path, "validate", path, "--json").stdout)
    assert shown["valid"] is True
    assert [(w["line"], w["field"]) for w in shown["warnings"]] == [
        (9, "nodes.greet.task.command.2")
    ]


SCHEDULED = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: scheduled}
spec:
  schedules:
    - {id: morning, cron: "0 9 * * 1-5", timezone: Asia/Shanghai, catchUp: latest}
    - {every: 90s}
  nodes:
    - {id: load, task: {type: noop}}
"""


def test_validate_prints_the_next_five_fire_times_of_each_schedule(tmp_path: Path) -> None:
    path = tmp_path / "scheduled.yaml"
    path.write_text(SCHEDULED)
    proc = run_cli(tmp_path, "validate", path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split(":")[0].strip(): line for line in proc.stdout.splitlines()}
    morning = lines["schedule morning"].split("next fires ")[1].split(", ")
    assert len(morning) == 5
    assert all(t.endswith("T09:00:00+08:00") for t in morning), morning
    every = lines["schedule schedule-2"].split("next fires ")[1].split(", ")
    assert len(every) == 5
    document = json.loads(run_cli(tmp_path, "validate", path, "--json").stdout)
    assert document["schedules"]["morning"] == morning
    assert len(document["schedules"]["schedule-2"]) == 5


@pytest.mark.parametrize(
    ("entry", "needle", "message"),
    [
        ('{cron: "0 25 * * *"}', '"0 25', "spec.schedules[0].cron: '0 25 * * *' is not a cron"),
        (
            '{cron: "0 9 * * *", timezone: Asia/Shanghia}',
            "Asia/Shanghia",
            "spec.schedules[0].timezone: unknown time zone 'Asia/Shanghia'",
        ),
        ("{every: 0s}", "0s", "spec.schedules[0].every: `every` must be longer than 0s"),
    ],
)
def test_bad_schedules_exit_2_located(
    tmp_path: Path, entry: str, needle: str, message: str
) -> None:
    line = f"    - {entry}"
    path = tmp_path / "bad.yaml"
    declared = SCHEDULED.split("  schedules:\n")[1].split("  nodes:")[0]
    path.write_text(SCHEDULED.replace(declared, line + "\n"))
    proc = run_cli(tmp_path, "validate", path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[0].startswith(f"{path}:6:{line.index(needle) + 1}: {message}")
