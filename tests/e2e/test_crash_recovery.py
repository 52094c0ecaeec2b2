"""Kill a real `whenflow run` with SIGKILL mid-execution, then `whenflow resume` it.

The task of every node (`crashtasks.step`) appends `node attempt` to a calls
file; the node chosen as the kill point then writes a `ready` marker and
blocks forever. The test waits for that marker (a bounded poll of a file the
subprocess writes: synchronisation on a real signal, no sleeps), SIGKILLs the
whole process group, and inspects the SQLite store with the stdlib: the
engine commits in groups, so the store holds a *prefix* of the run, and that
prefix must already be consistent. The resume then finishes the execution
without running any node again whose completion was durable.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import (
    E2E_DIR,
    REPO_ROOT,
    TERMINAL_EVENTS,
    cli_argv,
    cli_env,
    connect_db,
    run_json,
    wait_for_lease_expiry,
    write_pipeline,
)

pytestmark = pytest.mark.slow

CHAIN = ["a1", "a2", "a3", "a4"]
FAN = ["b1", "b2", "b3"]
TAIL = ["c1", "c2", "c3", "c4"]
NODES = [*CHAIN, *FAN, "j", *TAIL]
DEADLINE_S = 30.0
# The killed run's lease must expire before `resume` may take the execution over.
SHORT_LEASE = {"WHENFLOW_OWNER_LEASE": "1s"}


def _node(node_id: str, prev: str | None) -> str:
    lines = [
        f"    - id: {node_id}",
        '      task: {type: python, callable: "crashtasks:step"}',
        "      inputBindings:",
        f"        node: {node_id}",
        '        attempt: "{{ system.attempt }}"',
    ]
    if prev is not None:
        lines.append(f'        prev: "{prev}"')
    return "\n".join(lines)


def _pipeline_yaml() -> str:
    """a1 → a2 → a3 → a4 → (b1, b2, b3) → j → c1 → c2 → c3 → c4, all data dependencies."""
    nodes = [_node("a1", None)]
    nodes += [_node(n, f"{{{{ {p}.depth }}}}") for p, n in itertools.pairwise(CHAIN)]
    nodes += [_node(n, "{{ a4.depth }}") for n in FAN]
    nodes.append(_node("j", "{{ [" + ", ".join(f"{b}.depth" for b in FAN) + "] }}"))
    tail_prev = ["j", *TAIL]
    nodes += [_node(n, f"{{{{ {p}.depth }}}}") for p, n in itertools.pairwise(tail_prev)]
    header = (
        "apiVersion: whenflow/v1\n"
        "kind: Pipeline\n"
        "metadata: {name: crashy, version: 1.0.0}\n"
        "spec:\n"
        "  concurrency: 4\n"
        "  nodes:\n"
    )
    return header + "\n".join(nodes) + '\n  outputs:\n    depth: "{{ c4.depth }}"\n'


@dataclass
class Durable:
    """What the database held right after the kill."""

    execution_id: str
    status: str
    events: list[tuple[int, str]]
    states: dict[str, str]
    max_attempt: dict[str, int]


def _read_durable(home: Path) -> Durable:
    conn = connect_db(home)
    try:
        executions = conn.execute("SELECT id, status FROM executions").fetchall()
        assert len(executions) == 1
        eid = executions[0]["id"]
        events = [
            (int(r["seq"]), str(r["event_type"]))
            for r in conn.execute(
                "SELECT seq, event_type FROM events WHERE execution_id = ? ORDER BY seq", (eid,)
            )
        ]
        states = {
            r["node_id"]: r["state"]
            for r in conn.execute(
                "SELECT node_id, state FROM node_states WHERE execution_id = ?", (eid,)
            )
        }
        max_attempt = {
            r["node_id"]: int(r["m"])
            for r in conn.execute(
                "SELECT node_id, max(attempt) AS m FROM node_attempts "
                "WHERE execution_id = ? GROUP BY node_id",
                (eid,),
            )
        }
        return Durable(eid, str(executions[0]["status"]), events, states, max_attempt)
    finally:
        conn.close()


def _durably_started(home: Path, node_id: str) -> bool:
    """Whether `<node_id>.started` has been committed (the store may not exist yet)."""
    if not (home / "whenflow.db").exists():
        return False
    conn = connect_db(home)
    try:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE event_type = ?", (f"{node_id}.started",)
        ).fetchone()
    except sqlite3.OperationalError:  # the schema is not created yet
        return False
    finally:
        conn.close()
    return bool(row[0])


def _wait_until_blocked(
    proc: subprocess.Popen[bytes], work: Path, home: Path, kill_at: str
) -> None:
    """Return once the kill point is blocked in its task and its start is durable.

    Both are real signals written by the subprocess: the `ready` marker by the
    task, the `<kill_at>.started` row by the engine's group commit.
    """
    deadline = time.monotonic() + DEADLINE_S
    while not ((work / "ready").exists() and _durably_started(home, kill_at)):
        if time.monotonic() > deadline:
            pytest.fail(f"the kill point was not reached within {DEADLINE_S}s: {_stderr(work)}")
        try:
            # Doubles as the poll interval and notices a run that ends instead of blocking.
            code = proc.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"whenflow run exited ({code}) before the kill point: {_stderr(work)}")


def _stderr(work: Path) -> str:
    return (work / "stderr").read_text(errors="replace")


def _calls(work: Path) -> list[tuple[str, int]]:
    path = work / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(node, int(attempt)) for node, attempt in (line.split() for line in lines)]


def _lost_attempts(home: Path, execution_id: str) -> list[tuple[str, int]]:
    """(node, attempt) of the attempts the resume recorded as lost with the process."""
    conn = connect_db(home)
    try:
        rows = conn.execute(
            "SELECT node_id, attempt, status FROM node_attempts "
            "WHERE execution_id = ? AND error_type = 'AttemptLost' ORDER BY node_id, attempt",
            (execution_id,),
        ).fetchall()
    finally:
        conn.close()
    assert all(r["status"] == "failed" for r in rows)
    return [(r["node_id"], int(r["attempt"])) for r in rows]


def _terminal_counts(events: list[tuple[int, str]]) -> Counter[str]:
    return Counter(
        etype.partition(".")[0]
        for _, etype in events
        if etype.partition(".")[0] in NODES and etype.partition(".")[2] in TERMINAL_EVENTS
    )


def _assert_prefix_consistent(durable: Durable) -> None:
    seqs = [seq for seq, _ in durable.events]
    assert seqs == list(range(1, len(seqs) + 1)), f"seq has gaps: {seqs}"
    types = [etype for _, etype in durable.events]
    assert types[:1] == ["pipeline.started"]
    terminal = _terminal_counts(durable.events)
    assert all(count == 1 for count in terminal.values()), terminal
    # A transition and its event are one unit: a node is terminal in node_states
    # exactly when its terminal event is in the log.
    terminal_states = {n for n, s in durable.states.items() if s in TERMINAL_EVENTS}
    assert terminal_states == set(terminal)


ANCESTORS = {
    "a1": set(),
    "b2": set(CHAIN),
    "j": {*CHAIN, *FAN},
    "c4": {*CHAIN, *FAN, "j", *TAIL[:-1]},
}


@pytest.mark.parametrize("kill_at", list(ANCESTORS))
def test_sigkill_then_resume_finishes_without_rerunning_completed_nodes(
    tmp_path: Path, kill_at: str
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    pipeline = write_pipeline(tmp_path, "crashy.yaml", _pipeline_yaml())
    task_env = {"PYTHONPATH": str(E2E_DIR), "CRASHTASKS_DIR": str(work)}

    with (work / "stdout").open("wb") as out, (work / "stderr").open("wb") as err:
        proc = subprocess.Popen(
            cli_argv("run", str(pipeline)),
            cwd=REPO_ROOT,
            env=cli_env(home, {**task_env, **SHORT_LEASE, "CRASHTASKS_KILL_AT": kill_at}),
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            _wait_until_blocked(proc, work, home, kill_at)
        finally:
            with contextlib.suppress(ProcessLookupError):  # it may have died on its own
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (work / "ready").read_text() == kill_at

    # --- what survived the kill: a consistent prefix of the run
    before = _read_durable(home)
    _assert_prefix_consistent(before)
    assert before.status not in ("completed", "failed")
    assert before.states.get(kill_at) not in TERMINAL_EVENTS
    completed_before = {
        etype.partition(".")[0] for _, etype in before.events if etype.endswith(".completed")
    }
    assert kill_at not in completed_before
    # Durable state is a prefix: the kill point's start is durable, so is every
    # completion it waited for.
    assert ANCESTORS[kill_at] <= completed_before
    assert before.states[kill_at] == "running"
    calls_before = _calls(work)
    assert (kill_at, 1) in calls_before

    # --- resume once the dead owner's lease has expired, the kill point allowed to finish
    wait_for_lease_expiry(home, before.execution_id)
    result = run_json(
        home, "resume", before.execution_id, env={**task_env, "CRASHTASKS_RELEASE": "1"}
    )

    assert result["status"] == "completed", result
    assert result["executionId"] == before.execution_id
    assert result["outputs"] == {"depth": 10}
    assert {n: v["status"] for n, v in result["nodes"].items()} == dict.fromkeys(NODES, "completed")
    assert run_json(home, "executions", "show", before.execution_id) == result

    after = _read_durable(home)
    seqs = [seq for seq, _ in after.events]
    assert seqs == list(range(1, len(seqs) + 1)), f"seq has gaps: {seqs}"
    assert after.events[: len(before.events)] == before.events  # the prefix is kept as it was
    assert [etype for _, etype in after.events] == result["events"]
    assert _terminal_counts(after.events) == Counter(dict.fromkeys(NODES, 1))
    types = [etype for _, etype in after.events]
    assert types.count("pipeline.started") == 1
    assert types.count("pipeline.resumed") == 1
    assert types[-1] == "pipeline.completed"
    assert after.status == "completed"
    assert after.states == dict.fromkeys(NODES, "completed")

    # --- who ran again: never a node whose completion was durable
    calls_after = _calls(work)[len(calls_before) :]
    rerun = {node for node, _ in calls_after}
    assert not rerun & completed_before, f"completed nodes ran again: {rerun & completed_before}"
    assert {n for n, _ in calls_before} | rerun == set(NODES)  # everything ran somewhere
    # The kill point ran again, with an attempt number above any the store had seen.
    kill_attempts = [attempt for node, attempt in calls_after if node == kill_at]
    assert kill_attempts == [before.max_attempt[kill_at] + 1]
    assert result["nodes"][kill_at]["attempts"] == kill_attempts[0]
    # Every attempt that was running at the kill (the kill point, and possibly a
    # fan-out sibling) is recorded as lost, and its node ran again after it.
    was_running = sorted(
        (n, before.max_attempt[n]) for n, state in before.states.items() if state == "running"
    )
    assert (kill_at, 1) in was_running
    assert _lost_attempts(home, before.execution_id) == was_running
    for node, attempt in was_running:
        assert max(a for n, a in calls_after if n == node) == attempt + 1
