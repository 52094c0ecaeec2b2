"""A secret first read by a later node is masked in what an earlier node wrote (issue 15, item 8).

The mask is seeded, when the execution starts, with the value of every
constant `secret('NAME')` of the pipeline, read here from a secrets file.
"""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import connect_db, run_cli, write_pipeline

CANARY = "file-canary-7f3a2b"

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: seeded, version: 1.0.0}
spec:
  inputs:
    echoed: {type: string, required: true}
  nodes:
    - id: early
      task: {type: shell, script: 'echo "early saw $WF_INPUT_VALUE"'}
      inputBindings:
        value: "{{ pipeline.input.echoed }}"
    - id: late
      startWhen: "event:early.completed"
      task: {type: shell, script: 'echo "late has ${#WF_INPUT_TOKEN} characters"'}
      inputBindings:
        token: "{{ secret('FILE_TOKEN') }}"
"""


def test_the_secrets_file_seeds_the_mask_before_the_first_node(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"FILE_TOKEN: {CANARY}\n")
    secrets.chmod(0o600)
    pipeline = write_pipeline(tmp_path, "seeded.yaml", PIPELINE)
    env = {"WHENFLOW_SECRETS_FILE": str(secrets)}
    proc = run_cli(tmp_path, "run", pipeline, "-i", f"echoed={CANARY}", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "completed"
    logs = run_cli(tmp_path, "executions", "logs", result["executionId"], env=env)
    assert "early saw ***" in logs.stdout
    assert f"late has {len(CANARY)} characters" in logs.stdout  # the task got the value
    conn = connect_db(tmp_path)
    try:
        store = "\n".join(conn.iterdump())
    finally:
        conn.close()
    for text in (proc.stdout, proc.stderr, logs.stdout, store):
        assert CANARY not in text


def test_a_world_readable_secrets_file_stops_the_run(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"FILE_TOKEN: {CANARY}\n")
    secrets.chmod(0o644)
    pipeline = write_pipeline(tmp_path, "seeded.yaml", PIPELINE)
    proc = run_cli(
        tmp_path, "run", pipeline, "-i", "echoed=x", env={"WHENFLOW_SECRETS_FILE": str(secrets)}
    )
    assert proc.returncode == 2, proc.stderr
    assert "chmod 600" in proc.stderr
    assert "Traceback" not in proc.stderr
