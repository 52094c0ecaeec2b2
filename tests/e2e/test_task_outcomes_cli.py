"""Through the real CLI: what a python task raises ends its attempt, never `whenflow run`.

Issue 13, items 1 and 4: `sys.exit(0)` in a task used to end `whenflow run`
with exit 0 and leave the execution `running`; a `KeyError('rows')` reached
the user as `'rows'`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import REPO_ROOT, connect_db, run_cli, run_json, write_pipeline

TASKS_ENV = {"PYTHONPATH": str(REPO_ROOT / "tests")}

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: unruly, version: 1.0.0}}
spec:
  nodes:
    - id: bad
      task: {{type: python, callable: "taskfuncs.unruly:{function}"{isolation}}}
      inputBindings: {inputs}
      retry: {{maxAttempts: 2, delay: 0s}}
    - id: cleanup
      startWhen: "event:bad.failed"
      task: {{type: noop}}
"""


def pipeline(home: Path, function: str, inputs: str = "{}", isolation: str = "") -> Path:
    body = PIPELINE.format(
        function=function,
        inputs=inputs,
        isolation=f", isolation: {isolation}" if isolation else "",
    )
    return write_pipeline(home, "unruly.yaml", body)


@pytest.mark.parametrize(
    ("function", "inputs", "isolation", "error_type"),
    [
        ("exit_process", "{code: 0}", "", "SystemExit"),
        ("exit_process_async", "{code: 0}", "", "SystemExit"),
        ("raise_base_async", "{kind: KeyboardInterrupt}", "", "KeyboardInterrupt"),
        ("raise_base", "{kind: GeneratorExit}", "", "GeneratorExit"),
        ("next_of_empty", "{}", "", "StopIteration"),
        ("exit_process", "{code: 0}", "process", "SystemExit"),
        ("hard_exit", "{}", "process", "ChildProcessDied"),
    ],
)
def test_a_task_that_exits_fails_its_attempt_and_the_run_ends(
    tmp_path: Path, function: str, inputs: str, isolation: str, error_type: str
) -> None:
    path = pipeline(tmp_path, function, inputs, isolation)
    result = run_json(tmp_path, "run", path, env=TASKS_ENV, expect_code=1)
    assert result["status"] == "failed"
    assert result["events"] == [
        "pipeline.started",
        "bad.started",
        "bad.retrying",
        "bad.started",
        "bad.failed",
        "cleanup.started",
        "cleanup.completed",
        "pipeline.failed",
    ]
    assert result["nodes"]["bad"]["error"].startswith(
        f"{error_type}: " if error_type != "ChildProcessDied" else "the isolated python process"
    )
    shown = run_json(tmp_path, "executions", "show", execution_id(result))
    assert shown["status"] == "failed"
    assert failed_payload(tmp_path)["error_type"] == error_type


def execution_id(result: dict[str, Any]) -> str:
    return str(result["executionId"])


def failed_payload(home: Path) -> dict[str, Any]:
    conn = connect_db(home)
    try:
        (payload,) = conn.execute(
            "SELECT payload FROM events WHERE event_type = 'bad.failed'"
        ).fetchone()
    finally:
        conn.close()
    return dict(json.loads(payload))


@pytest.mark.parametrize("isolation", ["", "process"])
def test_a_key_error_shows_its_type_and_its_traceback_is_in_the_log(
    tmp_path: Path, isolation: str
) -> None:
    path = pipeline(tmp_path, "lookup_rows", isolation=isolation)
    proc = run_cli(tmp_path, "run", path, env=TASKS_ENV)
    assert proc.returncode == 1, proc.stderr
    assert "bad failed: KeyError: 'rows'" in proc.stdout
    assert failed_payload(tmp_path)["error_type"] == "KeyError"
    assert failed_payload(tmp_path)["message"] == "KeyError: 'rows'"
    listed = run_json(tmp_path, "executions", "list")[0]
    logs = run_cli(tmp_path, "executions", "logs", execution_id(listed), "--node", "bad")
    lines = logs.stdout.splitlines()
    assert "bad#1 [stderr] Traceback (most recent call last):" in lines
    assert "bad#2 [stderr] KeyError: 'rows'" in lines
    assert any("in _rows_of" in line for line in lines)
    assert not any("/whenflow/" in line for line in lines)


def test_retry_on_timeout_error_retries_a_tasks_own_timeout_error(tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        "timeouts.yaml",
        """
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {name: timeouts, version: 1.0.0}
        spec:
          nodes:
            - id: call
              task: {type: python, callable: "taskfuncs.unruly:flaky_timeout"}
              retry: {maxAttempts: 3, delay: 0s, retryOn: [TimeoutError]}
            - id: never
              task: {type: python, callable: "taskfuncs.unruly:python_timeout"}
              allowFailure: true
              retry: {maxAttempts: 3, delay: 0s, retryOn: [TaskTimeout]}
        """,
    )
    result = run_json(tmp_path, "run", path, env=TASKS_ENV)
    assert result["nodes"]["call"] == {
        "status": "completed",
        "attempts": 2,
        "outputs": {"attempt": 2},
        "error": None,
    }
    assert result["nodes"]["never"]["attempts"] == 1  # not a TaskTimeout: no retry
    assert result["nodes"]["never"]["error"] == (
        "TimeoutError: the server did not answer (attempt 1)"
    )
