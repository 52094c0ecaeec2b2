"""Ctrl-C while `whenflow run` waits for its notifications: the ended execution is reported."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
from pathlib import Path

from cli_helpers import REPO_ROOT, cli_argv, cli_env

PIPELINE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: notify_interrupt, version: 1.0.0}}
spec:
  notify:
    - on: [completed]
      webhook: {{url: "http://127.0.0.1:{port}/hook"}}
  nodes:
    - id: a
      task: {{type: noop}}
"""


def test_ctrl_c_during_the_notification_wait_reports_the_completed_run(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=8) as receiver:  # never answers
        pipeline = tmp_path / "p.yaml"
        pipeline.write_text(PIPELINE.format(port=receiver.getsockname()[1]))
        proc = subprocess.Popen(
            cli_argv("run", str(pipeline)),
            cwd=REPO_ROOT,
            env=cli_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The webhook connects once the run has ended and its result is known.
            readable, _, _ = select.select([receiver], [], [], 60)
            assert readable, "the webhook never connected"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "completed" in out
    assert "resume" not in err
