"""One owner per execution, requests before relaunches, and SIGTERM, through the real CLI.

Issue 13 items 3, 10 and 18. Every test drives a real `whenflow run` in the
background (its own session, a private WHENFLOW_HOME, a 1 s lease so that a
killed owner's lease expires quickly) and synchronises on what the run writes:
marker files of its tasks and rows of its SQLite store, polled with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_helpers import (
    E2E_DIR,
    REPO_ROOT,
    cli_argv,
    cli_env,
    connect_db,
    owner_row,
    run_cli,
    run_json,
    wait_for_lease_expiry,
    write_pipeline,
)

pytestmark = pytest.mark.slow

DEADLINE_S = 30.0
ENV = {"WHENFLOW_OWNER_LEASE": "1s", "PYTHONPATH": str(E2E_DIR)}


@contextlib.contextmanager
def background_run(home: Path, pipeline: Path) -> Iterator[subprocess.Popen[str]]:
    """`whenflow run PIPELINE` in the background; SIGKILLed at the end if still alive."""
    proc = subprocess.Popen(
        cli_argv("run", str(pipeline)),
        cwd=REPO_ROOT,
        env=cli_env(home, ENV),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def wait_until(proc: subprocess.Popen[str], what: str, ready: Callable[[], bool]) -> None:
    """Poll `ready` until true; fail if the run exits first or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_S
    while not ready():
        if proc.poll() is not None:
            stderr = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"whenflow run exited ({proc.returncode}) before {what}: {stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {DEADLINE_S}s")
        time.sleep(0.02)


def durable_events(home: Path) -> list[str]:
    if not (home / "whenflow.db").exists():
        return []
    conn = connect_db(home)
    try:
        return [r[0] for r in conn.execute("SELECT event_type FROM events ORDER BY seq")]
    except Exception:  # the schema is not there yet
        return []
    finally:
        conn.close()


def only_execution(home: Path) -> str:
    conn = connect_db(home)
    try:
        rows = conn.execute("SELECT id FROM executions").fetchall()
    finally:
        conn.close()
    assert len(rows) == 1
    return str(rows[0][0])


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ------------------------------------------------------------- one owner

HOLDING = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: holding, version: 1.0.0}}
spec:
  nodes:
    - id: work
      task:
        type: shell
        script: |
          echo start >> "{work}/starts"
          if [ -f "{work}/release" ]; then exit 0; fi
          sleep 300 &
          echo $! >> "{work}/pids"
          wait
"""


def test_resume_is_refused_while_the_run_lives_and_takes_over_after_its_lease_expires(
    tmp_path: Path,
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    pipeline = write_pipeline(tmp_path, "holding.yaml", HOLDING.format(work=work))
    with background_run(home, pipeline) as proc:
        wait_until(proc, "work started", lambda: "work.started" in durable_events(home))
        wait_until(proc, "the task ran", lambda: bool(lines(work / "pids")))
        eid = only_execution(home)
        owner = owner_row(home, eid)
        assert owner is not None
        assert owner["pid"] == proc.pid

        refused = run_cli(home, "resume", eid, env=ENV)
        assert refused.returncode == 1, refused.stderr
        assert f"execution {eid} is owned by process {proc.pid} on host" in refused.stderr
        assert "lease expires" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert lines(work / "starts") == ["start"]  # the refused resume ran nothing
        assert proc.poll() is None  # and the owner runs on, undisturbed

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    (work / "release").touch()
    wait_for_lease_expiry(home, eid)
    result = run_json(home, "resume", eid, env=ENV)
    assert result["status"] == "completed"
    assert result["events"] == [
        "pipeline.started",
        "work.started",
        "pipeline.resumed",
        "work.started",
        "work.completed",
        "pipeline.completed",
    ]
    assert owner_row(home, eid) is None  # released with the end


# ------------------------------------------------------------- SIGTERM / SIGINT

PYTHON_HOLDING = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: holding, version: 1.0.0}}
spec:
  nodes:
    - id: work
      task: {{type: python, callable: "holdtasks:hold", isolation: process}}
      inputBindings: {{folder: "{work}"}}
"""


@pytest.mark.parametrize(
    ("signum", "code", "said", "template"),
    [
        (signal.SIGTERM, 143, "terminated (SIGTERM)", HOLDING),
        (signal.SIGTERM, 143, "terminated (SIGTERM)", PYTHON_HOLDING),
        (signal.SIGINT, 130, "interrupted", HOLDING),
    ],
    ids=["sigterm-shell", "sigterm-isolated-python", "sigint-shell"],
)
def test_a_signal_stops_the_children_and_leaves_a_resumable_execution(
    tmp_path: Path, signum: signal.Signals, code: int, said: str, template: str
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    pipeline = write_pipeline(tmp_path, "holding.yaml", template.format(work=work))
    with background_run(home, pipeline) as proc:
        wait_until(proc, "work started", lambda: "work.started" in durable_events(home))
        wait_until(proc, "the task ran", lambda: bool(lines(work / "pids")))
        child = int(lines(work / "pids")[0])
        assert alive(child)
        os.kill(proc.pid, signum)  # the run only, as `timeout` or `docker stop` do
        proc.wait(timeout=DEADLINE_S)
        stderr = proc.stderr.read() if proc.stderr else ""
    eid = only_execution(home)
    assert proc.returncode == code, stderr
    assert said in stderr
    if signum is signal.SIGTERM:
        assert f"whenflow resume {eid}" in stderr
    assert "Traceback" not in stderr
    assert not alive(child), "the task's process outlived the run"
    assert owner_row(home, eid) is None  # released: resume needs no wait

    (work / "release").touch()
    result = run_json(home, "resume", eid, env=ENV)
    assert result["status"] == "completed"
    assert result["events"] == [
        "pipeline.started",
        "work.started",
        "pipeline.resumed",
        "work.started",
        "work.completed",
        "pipeline.completed",
    ]
    assert len(lines(work / "pids")) == 1  # the resumed attempt was released at once


# ------------------------------------------------- requests before relaunches

MARKED_SHELL = """\
          echo "$WF_ATTEMPT" >> "{work}/starts"
          touch "{work}/ready"
          sleep 300
"""

RUNNING_NODE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: cut, version: 1.0.0}}
spec:
  nodes:
    - id: work
      stopWhen: "event:external.halt"
      task:
        type: shell
        script: |
{script}
    - id: after
      task: {{type: noop}}
      inputBindings: {{v: "{{{{ work.exit_code }}}}"}}
"""

FOREACH_NODE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: cut, version: 1.0.0}}
spec:
  nodes:
    - id: work
      forEach: "{{{{ [1, 2, 3] }}}}"
      maxParallel: 1
      task:
        type: shell
        script: |
{script}
"""

RETRYING_NODE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: cut, version: 1.0.0}}
spec:
  nodes:
    - id: work
      retry: {{maxAttempts: 3, delay: 1h}}
      task:
        type: shell
        script: |
          echo "$WF_ATTEMPT" >> "{work}/starts"
          touch "{work}/ready"
          exit 1
"""


@pytest.mark.parametrize(
    ("template", "durable", "request_args", "status", "work_status"),
    [
        (RUNNING_NODE, "work.started", ("executions", "cancel"), "cancelled", "cancelled"),
        (FOREACH_NODE, "work.started", ("executions", "cancel"), "cancelled", "cancelled"),
        (RETRYING_NODE, "work.retrying", ("executions", "cancel"), "cancelled", "cancelled"),
        (RUNNING_NODE, "work.started", ("events", "send", "{eid}", "halt"), "completed", "stopped"),
    ],
    ids=["cancel-running-node", "cancel-foreach-item", "cancel-retrying-node", "stop-event"],
)
def test_requests_posted_while_the_process_was_dead_apply_before_anything_is_relaunched(
    tmp_path: Path,
    template: str,
    durable: str,
    request_args: tuple[str, ...],
    status: str,
    work_status: str,
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    body = template.format(work=work, script=MARKED_SHELL.format(work=work))
    pipeline = write_pipeline(tmp_path, "cut.yaml", body)
    with background_run(home, pipeline) as proc:
        wait_until(proc, durable, lambda: durable in durable_events(home))
        wait_until(proc, "the task ran", lambda: (work / "ready").exists())
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    eid = only_execution(home)
    args = [a.format(eid=eid) for a in request_args]
    if "{eid}" not in request_args:
        args.append(eid)
    queued = run_json(home, *args, "--wait", "0", env=ENV)
    assert queued["applied"] is False

    wait_for_lease_expiry(home, eid)
    code = 0 if status == "completed" else 1
    result = run_json(home, "resume", eid, env=ENV, expect_code=code)
    assert lines(work / "starts") == ["1"], "the lost work started again"
    assert result["nodes"]["work"]["status"] == work_status
    assert result["status"] == status
    events = result["events"]
    resumed = events.index("pipeline.resumed")
    assert "work.started" not in events[resumed:]
    assert f"work.{work_status}" in events[resumed:]
