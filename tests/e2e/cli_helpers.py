"""Run the real `whenflow` CLI as a subprocess against a private WHENFLOW_HOME.

Every e2e test goes through `run_cli`: a fresh interpreter running
`python -m whenflow.cli.main`, the repository root as working directory (so
`examples.*` callables import), and `WHENFLOW_HOME` pointing at the test's
temporary folder so the SQLite store is real and private.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
EXAMPLES = REPO_ROOT / "examples"
TERMINAL_EVENTS = ("completed", "failed", "skipped", "stopped", "cancelled")
# Settings from the developer's shell must not leak into a test's store.
_SCRUBBED = ("WHENFLOW_DATABASE_URL", "WHENFLOW_ARTIFACTS_URL", "PYTHONPATH")


def cli_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: this one, WHENFLOW_HOME=home, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["WHENFLOW_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "whenflow.cli.main", *args]


def run_cli(
    home: Path,
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `whenflow ARGS` to completion and return what it printed and its exit code."""
    return subprocess.run(
        cli_argv(*(str(a) for a in args)),
        cwd=REPO_ROOT,
        env=cli_env(home, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(
    home: Path, *args: str | Path, env: Mapping[str, str] | None = None, expect_code: int = 0
) -> Any:
    """Run a `--json` command, check its exit code and that stdout is one JSON document."""
    proc = run_cli(home, *args, "--json", env=env)
    assert proc.returncode == expect_code, (
        f"whenflow {' '.join(map(str, args))} exited {proc.returncode}, wanted {expect_code}\n"
        f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return json.loads(proc.stdout)  # raises if stdout holds anything but one document


def write_pipeline(folder: Path, name: str, body: str) -> Path:
    """Write a pipeline YAML (dedented) into `folder` and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def node_events(events: Sequence[str], node_id: str) -> list[str]:
    return [e for e in events if e.partition(".")[0] == node_id]


def terminal_events(events: Sequence[str], node_id: str) -> list[str]:
    return [e for e in node_events(events, node_id) if e.partition(".")[2] in TERMINAL_EVENTS]


def connect_db(home: Path) -> sqlite3.Connection:
    """A plain stdlib connection to the store the CLI wrote (`$WHENFLOW_HOME/whenflow.db`)."""
    conn = sqlite3.connect(home / "whenflow.db", timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def db_events(home: Path, execution_id: str) -> list[tuple[int, str]]:
    """(seq, event_type) of one execution, in seq order, straight from SQLite."""
    conn = connect_db(home)
    try:
        rows = conn.execute(
            "SELECT seq, event_type FROM events WHERE execution_id = ? ORDER BY seq",
            (execution_id,),
        ).fetchall()
    finally:
        conn.close()
    return [(int(r["seq"]), str(r["event_type"])) for r in rows]


def owner_row(home: Path, execution_id: str) -> sqlite3.Row | None:
    """The execution's owner row (who runs it, until when), or None when nobody does."""
    conn = connect_db(home)
    try:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM execution_owners WHERE execution_id = ?", (execution_id,)
        ).fetchone()
    finally:
        conn.close()
    return row


def wait_for_lease_expiry(home: Path, execution_id: str, deadline_s: float = 30.0) -> None:
    """Poll the store until the execution's owner row has expired (a killed owner's
    lease runs out; nobody renews it) or is gone."""
    deadline = time.monotonic() + deadline_s
    while True:
        row = owner_row(home, execution_id)
        if row is None or row["expires_at"] < time.time():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the lease of {execution_id} did not expire: {dict(row)}")
        time.sleep(0.05)  # the poll interval of a condition read from the database
