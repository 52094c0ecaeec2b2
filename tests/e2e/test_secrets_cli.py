"""A canary secret through a real `whenflow run`: delivered to the task, found nowhere else.

DESIGN.md §10: secrets are masked at the log sink and in every event,
variable and result. The test greps the whole SQLite store and everything the
CLI printed, in plain and `--json` mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import connect_db, run_cli, write_pipeline

CANARY = "canary-9d1e-s3cr3t-value"

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: secretive, version: 1.0.0}
spec:
  nodes:
    - id: call
      task:
        type: shell
        script: |
          echo "calling with $WF_INPUT_TOKEN"
          echo "length=${#WF_INPUT_TOKEN}" >> "$WF_OUTPUTS"
          echo "echoed=$WF_INPUT_TOKEN" >> "$WF_OUTPUTS"
      inputBindings:
        token: "{{ secret('API_TOKEN') }}"
    - id: fail
      allowFailure: true
      task: {type: shell, script: 'echo "refused $WF_INPUT_TOKEN" >&2; exit 3'}
      inputBindings:
        token: "{{ secret('API_TOKEN') }}"
  outputs:
    length: "{{ call.length }}"
    echoed: "{{ call.echoed }}"
"""


def dump_store(home: Path) -> str:
    conn = connect_db(home)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["plain", "json"])
def test_a_secret_reaches_the_task_and_nothing_else(tmp_path: Path, mode: str) -> None:
    pipeline = write_pipeline(tmp_path, "secretive.yaml", PIPELINE)
    args = [pipeline, "--json"] if mode == "json" else [pipeline]
    proc = run_cli(tmp_path, "run", *args, env={"WHENFLOW_SECRET_API_TOKEN": CANARY})
    assert proc.returncode == 0, proc.stderr

    assert CANARY not in proc.stdout
    assert CANARY not in proc.stderr
    store = dump_store(tmp_path)
    assert "calling with ***" in store  # the log line, masked at the sink
    assert CANARY not in store
    if mode == "json":
        result = json.loads(proc.stdout)
        # The task got the real value (its length), the outputs show it masked.
        assert result["outputs"] == {"length": len(CANARY), "echoed": "***"}
        assert result["nodes"]["fail"]["status"] == "failed"
    logs = run_cli(tmp_path, "executions", "logs", _last_execution(tmp_path))
    assert "refused ***" in logs.stdout
    assert CANARY not in logs.stdout


def _last_execution(home: Path) -> str:
    conn = connect_db(home)
    try:
        (execution_id,) = conn.execute(
            "SELECT id FROM executions ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    return str(execution_id)


TASKS_ENV = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
PIN = "4821390657"  # long enough not to occur by chance in timestamps and ids

PYTHON_TASKS = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: secretive-python, version: 1.0.0}
spec:
  nodes:
    - id: environ
      task: {type: python, callable: "taskfuncs.unruly:read_environment"}
    - id: shell_environ
      task:
        type: shell
        script: |
          env | grep -c WHENFLOW_SECRET_ || true
          tr '\\0' '\\n' < /proc/$PPID/environ | grep WHENFLOW_SECRET_ || true
          tr '\\0' '\\n' < /proc/$PPID/environ | grep WHENFLOW_SECRET_ | grep -vc '=$' || true
    - id: full
      task: {type: python, callable: "taskfuncs.unruly:echo"}
      inputBindings: {value: "{{ secret('API_TOKEN') }}"}
    - id: short
      task: {type: python, callable: "taskfuncs.unruly:echo"}
      inputBindings: {value: "{{ secret('API_TOKEN')[:-1] }}"}
    - id: pin
      task: {type: python, callable: "taskfuncs.unruly:echo"}
      inputBindings: {value: "{{ secret('PIN') | float }}"}
    - id: isolated
      task: {type: python, callable: "taskfuncs.unruly:echo", isolation: process}
      inputBindings: {value: "{{ secret('API_TOKEN')[1:] }}"}
  outputs:
    environ: "{{ environ.environment_secrets }}"
    process_environ: "{{ environ.process_secrets }}"
    short: "{{ short.echo }}"
    pin: "{{ pin.echo }}"
    isolated: "{{ isolated.echo }}"
"""


@pytest.mark.parametrize("mode", ["plain", "json"])
def test_python_tasks_cannot_leak_secrets_or_values_derived_from_them(
    tmp_path: Path, mode: str
) -> None:
    pipeline = write_pipeline(tmp_path, "python.yaml", PYTHON_TASKS)
    args = [pipeline, "--json"] if mode == "json" else [pipeline]
    env = {**TASKS_ENV, "WHENFLOW_SECRET_API_TOKEN": CANARY, "WHENFLOW_SECRET_PIN": PIN}
    proc = run_cli(tmp_path, "run", *args, env=env)
    assert proc.returncode == 0, proc.stderr

    store = dump_store(tmp_path)
    terminal = proc.stdout + proc.stderr
    # CANARY[:-1] and CANARY[1:] are inside CANARY: one test each covers both forms.
    for leaked in (CANARY[:-1], CANARY[1:], PIN):
        assert leaked not in terminal
        assert leaked not in store
    assert "environment secrets: {}" in store  # os.environ no longer holds them
    assert "print: ***" in store
    assert "logging: ***" in store
    assert "stderr: ***" in store
    if mode == "json":
        result = json.loads(proc.stdout)
        assert result["outputs"] == {
            "environ": [],
            "process_environ": [],
            "short": "echo ***",
            "pin": "echo ***",
            "isolated": "echo ***",
        }
    else:
        assert "full | print: ***" in proc.stdout  # the progress shows the masked line
    logs = run_cli(tmp_path, "executions", "logs", _last_execution(tmp_path))
    # Neither os.environ nor /proc/<whenflow>/environ shows a value to the shell.
    assert logs.stdout.count("shell_environ#1 [stdout] 0") == 2
    assert CANARY[:-1] not in logs.stdout
