"""Task functions for the e2e tests, imported by the CLI subprocess via PYTHONPATH=tests/e2e.

`step` drives the crash-recovery test. Configuration comes from the environment
of the `whenflow` process, so the test can change it between the run it kills
and the resume:

- `CRASHTASKS_DIR`: folder for the `calls` file (one `node attempt` line per
  call, appended before anything else) and the `ready` marker.
- `CRASHTASKS_KILL_AT`: the node that, once called, writes `ready` (its own
  id) and then blocks forever: the test kills the process at that point.
- `CRASHTASKS_RELEASE=1`: never block (the resume run).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any


def _record(folder: Path, line: str) -> None:
    # One small O_APPEND write per call: lines never interleave or tear.
    fd = os.open(folder / "calls", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def step(node: str, attempt: int, prev: Any = None) -> dict[str, Any]:
    """Record the call, maybe block until killed, and return depth = 1 + depth of the inputs."""
    folder = Path(os.environ["CRASHTASKS_DIR"])
    _record(folder, f"{node} {attempt}\n")
    if node == os.environ.get("CRASHTASKS_KILL_AT") and os.environ.get("CRASHTASKS_RELEASE") != "1":
        marker = folder / "ready.tmp"
        marker.write_text(node)
        marker.replace(folder / "ready")  # atomic: the test sees all of it or nothing
        threading.Event().wait()  # until SIGKILL
    parents = prev if isinstance(prev, list) else [prev or 0]
    return {"depth": 1 + max(parents), "node": node}


def template_text() -> dict[str, Any]:
    """A value that looks like a template; it must stay text wherever it travels."""
    return {"s": "{{ 7*7 }}"}
