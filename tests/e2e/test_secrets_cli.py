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
