"""Deadlines and finally nodes through the real CLI (DESIGN.md §5, Deadlines and Cleanup).

The example runs to its timeout; a second test cancels a real `whenflow run`
twice from another process (`whenflow executions cancel`) and checks that a
hanging finally node does not keep the execution from ending. The run is
synchronised on marker files its shell tasks write, polled with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import (
    E2E_DIR,
    EXAMPLES,
    REPO_ROOT,
    cli_argv,
    cli_env,
    connect_db,
    node_events,
    run_cli,
    run_json,
    wait_for_lease_expiry,
    write_pipeline,
)

WAIT_S = 30.0


def test_the_example_releases_its_lease_after_the_pipeline_timeout(tmp_path: Path) -> None:
    result = run_json(tmp_path, "run", EXAMPLES / "cleanup_and_deadlines.yaml", expect_code=1)

    assert result["status"] == "failed"
    assert result["error"] == "pipeline timeout 3s passed"
    events = result["events"]
    # The flaky fetch retried within its deadline; the crunch overran the timeout.
    assert node_events(events, "fetch") == [
        "fetch.started",
        "fetch.retrying",
        "fetch.started",
        "fetch.retrying",
        "fetch.started",
        "fetch.completed",
    ]
    ending = events.index("pipeline.ending")
    assert events[ending - 2 : ending + 1] == [
        "crunch.started",
        "crunch.cancelled",
        "pipeline.ending",
    ]
    # Both finally nodes start after the ending, and the execution ends after both.
    for node in ("release_lease", "page_someone"):
        assert node_events(events, node) == [f"{node}.started", f"{node}.completed"]
        assert events.index(f"{node}.started") > ending
    assert events[-1] == "pipeline.failed"
    nodes = result["nodes"]
    assert nodes["release_lease"]["outputs"] == {
        "released": "lease-42",
        "because": "failed: pipeline timeout 3s passed",
    }
    assert nodes["page_someone"]["outputs"] == {
        "message": "nightly load failed: pipeline timeout 3s passed"
    }


def test_validate_prints_the_effective_start_of_finally_nodes(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "validate", EXAMPLES / "cleanup_and_deadlines.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "release_lease  startWhen: event:pipeline.ending\n" in proc.stdout
    assert (
        "page_someone   startWhen: event:pipeline.ending && {{ ending.status != 'completed' }}"
        in proc.stdout
    )


def test_bad_deadline_and_finally_values_are_located(tmp_path: Path) -> None:
    pipeline = write_pipeline(
        tmp_path,
        "bad.yaml",
        """\
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {name: bad, version: 1.0.0}
        spec:
          nodes:
            - id: a
              task: {type: noop}
              deadline: -1
            - id: b
              task: {type: noop}
              finally: "yes"
        """,
    )
    proc = run_cli(tmp_path, "validate", pipeline)
    assert proc.returncode == 2
    assert "bad.yaml:8:17: nodes.a.deadline: -1 is negative" in proc.stderr
    assert "bad.yaml:11:16: nodes.b.finally: must be a valid boolean" in proc.stderr
    assert "Traceback" not in proc.stderr


HANGING_CLEANUP = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: hanging_cleanup, version: 1.0.0}}
spec:
  finallyGrace: 1h
  nodes:
    - id: work
      task:
        type: shell
        script: |
          touch "{work}/working"
          sleep 300
    - id: cleanup
      finally: true
      task:
        type: shell
        env: {{ENDING: "{{{{ ending.status }}}}"}}
        script: |
          echo "$ENDING" > "{work}/cleaning"
          sleep 300
"""


def wait_for(proc: subprocess.Popen[str], what: str, ready: Callable[[], bool]) -> None:
    """Poll `ready` until true; fail if the run exits first or WAIT_S passes."""
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"whenflow run exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT_S}s")
        time.sleep(0.02)


def the_execution(home: Path) -> str:
    conn = connect_db(home)
    try:
        (row,) = conn.execute("SELECT id FROM executions").fetchall()
    finally:
        conn.close()
    return str(row[0])


@pytest.mark.slow
def test_a_second_cancel_ends_a_hanging_finally_node(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    pipeline = tmp_path / "hanging.yaml"
    pipeline.write_text(HANGING_CLEANUP.format(work=work))
    proc = subprocess.Popen(
        cli_argv("run", str(pipeline), "--json"),
        cwd=REPO_ROOT,
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(proc, "work started", (work / "working").exists)
        execution_id = the_execution(home)
        first = run_cli(home, "executions", "cancel", execution_id, "--reason", "first")
        assert first.returncode == 0, first.stderr
        wait_for(proc, "cleanup started", (work / "cleaning").exists)
        assert (work / "cleaning").read_text().strip() == "cancelled"
        second = run_cli(home, "executions", "cancel", execution_id, "--reason", "second")
        assert second.returncode == 0, second.stderr
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    result = json.loads(out)
    assert result["status"] == "cancelled"
    assert result["events"][-5:] == [
        "work.cancelled",
        "pipeline.ending",
        "cleanup.started",
        "cleanup.cancelled",
        "pipeline.cancelled",
    ]


DEADLINE_CRASH = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: deadline_crash, version: 1.0.0}}
spec:
  nodes:
    - id: fetch
      deadline: 2s
      task: {{type: python, callable: "holdtasks:hold"}}
      inputBindings: {{folder: "{work}"}}
    - id: cleanup
      finally: true
      task: {{type: noop}}
      inputBindings: {{why: "{{{{ ending.reason }}}}"}}
"""


def durable_started_at(home: Path, event_type: str) -> float | None:
    """When `event_type` was published, once it is durable in the store (None before)."""
    if not (home / "whenflow.db").exists():
        return None
    conn = connect_db(home)
    try:
        row = conn.execute(
            "SELECT timestamp FROM events WHERE event_type = ?", (event_type,)
        ).fetchone()
    except Exception:  # the schema is not there yet
        return None
    finally:
        conn.close()
    return None if row is None else float(row[0])


@pytest.mark.slow
def test_a_node_deadline_keeps_its_clock_across_a_kill_and_resume(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    pipeline = tmp_path / "crash.yaml"
    pipeline.write_text(DEADLINE_CRASH.format(work=work))
    env = {"WHENFLOW_OWNER_LEASE": "1s", "PYTHONPATH": str(E2E_DIR)}
    proc = subprocess.Popen(
        cli_argv("run", str(pipeline)),
        cwd=REPO_ROOT,
        env=cli_env(home, env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            proc, "fetch started", lambda: durable_started_at(home, "fetch.started") is not None
        )
        started = durable_started_at(home, "fetch.started")
        assert started is not None
        execution_id = the_execution(home)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the crash: no cleanup, no final commit
        proc.wait(timeout=30)
    wait_for_lease_expiry(home, execution_id)
    while time.time() < started + 2.05:  # the deadline passes while nobody runs it
        time.sleep(0.05)

    result = run_json(home, "resume", execution_id, env=env, expect_code=1)

    assert result["status"] == "failed"
    assert result["events"][result["events"].index("pipeline.resumed") :] == [
        "pipeline.resumed",
        "fetch.failed",
        "pipeline.ending",
        "cleanup.started",
        "cleanup.completed",
        "pipeline.failed",
    ]
    assert result["nodes"]["fetch"]["error"] == "deadline 2s passed during attempt 1"
    assert result["nodes"]["cleanup"]["outputs"] == {"why": "node(s) failed: fetch"}
    assert len((work / "pids").read_text().split()) == 1  # no new attempt after the resume
