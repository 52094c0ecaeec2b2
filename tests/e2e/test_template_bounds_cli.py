"""Templates cannot freeze `whenflow run` or crash `validate` (issue 13, items 5, 13, 14).

Each pipeline here froze the run (no execution was even stored), stalled the
dispatcher while an unrelated node was failed as timed out, or crashed
`validate` with a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_helpers import db_events, node_events, run_cli, run_json, write_pipeline

LOCATION = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


def _pipeline(tmp_path: Path, start_when: str, binding: str) -> Path:
    body = f"""
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {{name: bounds, version: 0.1.0}}
        spec:
          nodes:
            - id: first
              task: {{type: noop}}
            - id: gated
              startWhen: '{start_when}'
              task: {{type: noop}}
            - id: bound
              task: {{type: noop}}
              inputBindings:
                x: '{binding}'
    """
    return write_pipeline(tmp_path, "bounds.yaml", body)


def _located_errors(proc_stderr: str, path: Path) -> list[tuple[int, int, str]]:
    found = []
    for line in proc_stderr.splitlines():
        match = LOCATION.match(line)
        assert match, f"not FILE:LINE:COL: message: {line!r}"
        assert match["file"] == str(path)
        found.append((int(match["line"]), int(match["col"]), match["message"]))
    return found


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_constant_power_tower_is_refused_with_its_location(tmp_path: Path, command: str) -> None:
    path = _pipeline(
        tmp_path,
        "event:first.completed && {{ ((10 ** 1000) ** 1000) ** 1000 > 0 }}",
        "{{ [1, (7 ** 900) ** 900] }}",
    )
    proc = run_cli(tmp_path, command, path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = _located_errors(proc.stderr, path)
    assert [(line, col) for line, col, _ in errors] == [(9, 44), (14, 12)]
    assert all("MAX_INT_BITS" in message for _, _, message in errors)
    assert errors[0][2].startswith("nodes.gated.startWhen:")
    assert errors[1][2].startswith("nodes.bound.inputBindings.x:")


@pytest.mark.parametrize("depth", [80, 300])
def test_deeply_nested_parentheses_are_a_located_error(tmp_path: Path, depth: int) -> None:
    nested = "(" * depth + "1" + ")" * depth
    path = _pipeline(tmp_path, f"{{{{ {nested} > 0 }}}}", f"{{{{ {nested} }}}}")
    proc = run_cli(tmp_path, "validate", path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = _located_errors(proc.stderr, path)
    assert [(line, col) for line, col, _ in errors] == [(9, 19), (14, 12)]
    assert all("nest" in message for _, _, message in errors)


def test_parentheses_nested_around_conditions_are_a_located_error(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, "(" * 300 + "event:first.completed" + ")" * 300, "{{ 1 }}")
    proc = run_cli(tmp_path, "validate", path)
    assert proc.returncode == 2, proc.stderr
    ((line, _col, message),) = _located_errors(proc.stderr, path)
    assert line == 9
    assert "nests deeper" in message


HEAVY = """
    apiVersion: whenflow/v1
    kind: Pipeline
    metadata: {name: heavy, version: 0.1.0}
    spec:
      inputs:
        n: {type: integer, required: true}
        width: {type: integer, required: true}
      nodes:
        - id: loops
          task: {type: noop}
          inputBindings:
            x: >-
              {% for a in 'x' * pipeline.input.n %}{% for b in 'x' * pipeline.input.n %}{%
              for c in 'x' * pipeline.input.n %}{% endfor %}{% endfor %}{% endfor %}
        - id: wide
          task: {type: noop}
          inputBindings:
            x: "{{ 'x' | center(pipeline.input.width) }}"
        - id: sleeper
          timeout: 20s
          task: {type: shell, command: ["sleep", "1"]}
        - id: after_sleeper
          task: {type: noop}
          startWhen: "event:sleeper.completed"
"""


def test_a_heavy_binding_fails_its_node_while_a_sibling_completes(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, "heavy.yaml", HEAVY)
    result = run_json(
        tmp_path, "run", path, "-i", "n=5000", "-i", "width=1000000000", expect_code=1
    )
    assert result["status"] == "failed"
    nodes = result["nodes"]
    assert nodes["loops"]["status"] == "failed"
    assert "limit of one template" in nodes["loops"]["error"]
    assert "{% for a in" in nodes["loops"]["error"]
    assert nodes["wide"]["status"] == "failed"
    assert "1,000,000,000" in nodes["wide"]["error"]
    assert nodes["sleeper"]["status"] == "completed"
    assert nodes["after_sleeper"]["status"] == "completed"
    events = [event for _, event in db_events(tmp_path, result["executionId"])]
    assert node_events(events, "loops") == ["loops.failed"]
    assert node_events(events, "wide") == ["wide.failed"]
    assert node_events(events, "sleeper") == ["sleeper.started", "sleeper.completed"]
    assert events[0] == "pipeline.started"
    assert events[-2:] == ["after_sleeper.completed", "pipeline.failed"]
    assert "internal error" not in (result["error"] or "")
