"""Task output through the real CLI: in the attempt's log, capped, never in `--json` stdout.

Issue 13, item 2: `print("hello")` in an in-process python task landed on
stdout before the JSON of `whenflow run --json`, and two tasks printing 50 MB
each grew the database from 1.7 MB to 154 MB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import REPO_ROOT, connect_db, run_cli, run_json, write_pipeline

TASKS_ENV = {"PYTHONPATH": str(REPO_ROOT / "tests")}
TRUNCATED = "output truncated: this attempt's log is capped at"

CHATTY = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: chatty, version: 1.0.0}
spec:
  nodes:
    - id: talk
      task: {type: python, callable: "taskfuncs.unruly:echo"}
      inputBindings: {value: "hello"}
    - id: talk_async
      task: {type: python, callable: "taskfuncs.unruly:chatty_async"}
      inputBindings: {text: "there"}
"""
AROUND = """
    - id: around
      task: {type: python, callable: "taskfuncs.unruly:write_around"}
      inputBindings: {text: "stray"}
"""

FLOOD = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: flood, version: 1.0.0}
spec:
  nodes:
    - id: one
      task: {type: python, callable: "taskfuncs.unruly:flood"}
      inputBindings: {megabytes: MB}
    - id: two
      task: {type: python, callable: "taskfuncs.unruly:flood_stderr"}
      inputBindings: {megabytes: MB}
    - id: shell
      task: {type: shell, script: "head -c MB000000 /dev/zero | tr '\\\\0' s | fold -w 999"}
"""


def logs_by_attempt(home: Path) -> dict[str, tuple[int, list[str]]]:
    """node#attempt -> (bytes of its stored log lines, its `whenflow` lines)."""
    conn = connect_db(home)
    try:
        rows = conn.execute(
            "SELECT node_id, attempt, stream, message FROM task_logs ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    found: dict[str, tuple[int, list[str]]] = {}
    for row in rows:
        key = f"{row['node_id']}#{row['attempt']}"
        size, notes = found.get(key, (0, []))
        size += len(row["message"].encode()) + 1
        if row["stream"] == "whenflow":
            notes.append(row["message"])
        found[key] = (size, notes)
    return found


def test_run_json_prints_one_document_while_tasks_print(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, "chatty.yaml", CHATTY.rstrip("\n") + AROUND)
    proc = run_cli(tmp_path, "run", path, "--json", env=TASKS_ENV)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # nothing but the document on stdout
    assert result["status"] == "completed"
    assert "hello" not in proc.stdout.replace('"echo hello"', "")
    assert "hello" not in proc.stderr
    # What no proxy sees (the descriptor itself, a thread without the task's
    # context) lands on stderr during a --json run, never in the document.
    assert "fd stray" in proc.stderr
    assert "thread stray" in proc.stderr
    execution_id = str(result["executionId"])
    logs = run_cli(tmp_path, "executions", "logs", execution_id).stdout.splitlines()
    assert "talk#1 [stdout] print: hello" in logs
    assert "talk#1 [stderr] stderr: hello" in logs
    assert "talk#1 [stderr] INFO:taskfuncs.unruly:logging: hello" in logs
    assert "talk#1 [log] ctx.log: hello" in logs
    assert "talk_async#1 [stdout] async there" in logs
    # The formatter depends on whether `talk` ran its basicConfig first: both run at once.
    assert any(
        line.startswith("talk_async#1 [stderr] ") and line.endswith("async logged: there")
        for line in logs
    ), logs


def test_plain_run_shows_task_output_in_progress(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, "chatty.yaml", CHATTY)
    proc = run_cli(tmp_path, "run", path, env=TASKS_ENV)
    assert proc.returncode == 0, proc.stderr
    lines = [line.partition(" ")[2] for line in proc.stdout.splitlines()]
    assert "talk | print: hello" in lines
    assert "talk_async | async there" in lines
    # Each line once: in progress, not also on the terminal's raw streams.
    assert proc.stdout.count("print: hello") == 1
    assert "hello" not in proc.stderr


@pytest.mark.parametrize(("limit", "megabytes"), [(None, 10), ("200000", 2)])
def test_every_attempts_log_is_capped_and_says_so(
    tmp_path: Path, limit: str | None, megabytes: int
) -> None:
    cap = 4 * 1024 * 1024 if limit is None else int(limit)
    env: dict[str, Any] = dict(TASKS_ENV)
    if limit is not None:
        env["WHENFLOW_TASK_LOG_LIMIT"] = limit
    path = write_pipeline(tmp_path, "flood.yaml", FLOOD.replace("MB", str(megabytes)))
    result = run_json(tmp_path, "run", path, env=env)
    assert result["status"] == "completed"
    logs = logs_by_attempt(tmp_path)
    assert sorted(logs) == ["one#1", "shell#1", "two#1"]
    for size, notes in logs.values():
        assert size <= cap + 1000  # the cap, plus the one truncation line
        (note,) = notes
        assert note.startswith(f"{TRUNCATED} {cap} bytes")
    conn = connect_db(tmp_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    stored = (tmp_path / "whenflow.db").stat().st_size
    printed = 3 * megabytes * 1024 * 1024
    # Rows and indexes cost about half again the text: bounded by the cap, not the output.
    assert stored < min(3 * cap * 1.6 + 1024 * 1024, printed * 0.7), (stored, printed)


def test_a_bad_log_limit_is_one_line_that_says_what_to_set(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, "chatty.yaml", CHATTY)
    proc = run_cli(tmp_path, "run", path, env={**TASKS_ENV, "WHENFLOW_TASK_LOG_LIMIT": "4MB"})
    assert proc.returncode != 0
    assert "WHENFLOW_TASK_LOG_LIMIT='4MB' is not a number of bytes" in proc.stderr
    assert "Traceback" not in proc.stderr
