"""`whenflow run` on a full disk ends with the store error, never hangs (issue 13 item 15).

A real full disk: WHENFLOW_HOME on a 2 MiB tmpfs (mounting needs root: the test
is skipped without it), a task that prints more log than fits. The run must
exit non-zero with "could not commit" within its timeout; once the filesystem
has room again, `resume` completes what was committed. Four tasks print 5 MB
each, so the disk fills even under a per-attempt log cap.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli, run_json, wait_for_lease_expiry, write_pipeline

pytestmark = pytest.mark.slow

ENV = {"WHENFLOW_OWNER_LEASE": "1s", "WHENFLOW_COMMIT_TIMEOUT": "10s"}


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


LOUD = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: loud, version: 1.0.0}}
spec:
  nodes:
    - id: first
      task: {{type: noop}}
    - id: loud
      startWhen: "event:first.completed"
      forEach: "{{{{ [1, 2, 3, 4] }}}}"
      task:
        type: shell
        script: |
          if [ -f "{work}/release" ]; then echo quiet; exit 0; fi
          line=$(printf '%0900d' 0)
          for i in $(seq 1 6000); do echo "$i $line"; done
"""


def test_a_full_disk_while_a_task_logs_ends_the_run_and_resume_completes_later(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    pipeline = write_pipeline(tmp_path, "loud.yaml", LOUD.format(work=work))
    with small_filesystem(tmp_path / "home", "2m") as home:
        ran = run_cli(home, "run", pipeline, "--json", env=ENV, timeout=120)
        assert ran.returncode == 1, ran.stderr
        assert "error: the state store could not commit" in ran.stderr
        assert "full" in ran.stderr
        assert "Traceback" not in ran.stderr
        assert ran.stdout == ""

        # Still full: resume ends with the same kind of error, it does not hang either.
        shown = run_json(home, "executions", "list", env=ENV)
        eid = shown[0]["executionId"]
        assert shown[0]["status"] == "running"
        wait_for_lease_expiry(home, eid)
        again = run_cli(home, "resume", eid, env=ENV, timeout=120)
        assert again.returncode == 1, again.stderr
        assert "could not commit" in again.stderr or "full" in again.stderr

        grow(home, "256m")
        (work / "release").touch()
        wait_for_lease_expiry(home, eid)
        result = run_json(home, "resume", eid, env=ENV)
        assert result["status"] == "completed"
        assert result["nodes"]["first"]["attempts"] == 1  # committed before the fault
        events = result["events"]
        assert events[:3] == ["pipeline.started", "first.started", "first.completed"]
        assert events[-2:] == ["loud.completed", "pipeline.completed"]
        assert result["nodes"]["loud"]["status"] == "completed"
