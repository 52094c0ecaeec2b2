"""Approvals, external events and cancels from another process (DESIGN.md §5, §7).

A real `whenflow run` waits at an approval node; separate `whenflow approve`,
`reject`, `events send` and `executions cancel` processes reach it through the
inbox table of the shared SQLite store. The tests synchronise on the line the
run prints when the node starts waiting, and on the CLI's own wait for the
message to be applied: no sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_helpers import (
    EXAMPLES,
    REPO_ROOT,
    cli_argv,
    cli_env,
    connect_db,
    run_cli,
    run_json,
    wait_for_lease_expiry,
    write_pipeline,
)

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: gated, version: 1.0.0}
spec:
  nodes:
    - {id: build, task: {type: noop}, inputBindings: {artifact: app.tar}}
    - id: review
      startWhen: event:build.completed
      task: {type: approval, message: "Ship {{ build.artifact }}?", approvers: [alice]}
    - id: ship
      startWhen: "event:review.approved && event:external.go"
      task: {type: noop}
      inputBindings: {by: "{{ review.by }}", note: "{{ review.comment }}"}
  outputs: {shipped_by: "{{ ship.by }}"}
"""


def waiting_hint(node: str) -> re.Pattern[str]:
    """The line `whenflow run` prints when `node` starts waiting for a decision."""
    return re.compile(
        rf"{node} waiting: (.*); decide with `whenflow approve (\S+) {node}` "
        rf"or `whenflow reject \2 {node}`"
    )


@contextmanager
def waiting_run(
    home: Path, pipeline: Path, message: str = "Ship app.tar?", node: str = "review"
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A `whenflow run` in the background, once its approval `node` waits; yields the id.

    Its lease is short: a test that kills it resumes once the lease expired.
    """
    proc = subprocess.Popen(
        cli_argv("run", str(pipeline)),
        cwd=REPO_ROOT,
        env=cli_env(home, {"WHENFLOW_OWNER_LEASE": "1s"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        hint = waiting_hint(node)
        for line in proc.stdout:
            seen.append(line)
            found = hint.search(line)
            if found:
                assert found.group(1) == message
                # The line is printed as the event is published; the commit follows.
                durable_state(home, found.group(2), node, "waiting")
                yield proc, found.group(2)
                break
        else:
            raise AssertionError(f"the run never waited; it printed: {''.join(seen)}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def durable_state(home: Path, execution_id: str, node: str, state: str) -> None:
    """Poll the store (bounded) until the node's committed state is `state`."""
    deadline = time.monotonic() + 30
    while True:
        conn = connect_db(home)
        try:
            row = conn.execute(
                "SELECT state FROM node_states WHERE execution_id = ? AND node_id = ?",
                (execution_id, node),
            ).fetchone()
        finally:
            conn.close()
        if row is not None and row["state"] == state:
            return
        assert time.monotonic() < deadline, f"{node} never became {state} in the store"
        time.sleep(0.02)


def inbox_rows(home: Path) -> list[tuple[str, str, bool, str | None]]:
    conn = connect_db(home)
    try:
        rows = conn.execute(
            "SELECT kind, target, applied_at IS NOT NULL AS applied, refusal FROM inbox ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [(r["kind"], r["target"], bool(r["applied"]), r["refusal"]) for r in rows]


def test_approve_and_send_an_event_to_a_running_pipeline(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, "gated.yaml", PIPELINE)
    with waiting_run(tmp_path, pipeline) as (proc, eid):
        shown = run_json(tmp_path, "executions", "show", eid)
        assert shown["status"] == "waiting"
        assert shown["nodes"]["review"]["status"] == "waiting"

        sent = run_json(tmp_path, "events", "send", eid, "go", "-p", "ticket=42")
        assert (sent["applied"], sent["refusal"]) == (True, None)
        refused = run_json(tmp_path, "approve", eid, "review", "--by", "mallory", expect_code=1)
        assert refused["refusal"] == "'mallory' may not decide 'review'; approvers: alice"
        approved = run_json(tmp_path, "approve", eid, "review", "--by", "alice", "-m", "ship it")
        assert (approved["applied"], approved["refusal"]) == (True, None)

        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

    result = run_json(tmp_path, "executions", "show", eid)
    assert result["status"] == "completed"
    assert result["outputs"] == {"shipped_by": "alice"}
    review = result["nodes"]["review"]["outputs"]
    assert (review["decision"], review["by"], review["comment"]) == ("approved", "alice", "ship it")
    assert result["events"] == [
        "pipeline.started",
        "build.started",
        "build.completed",
        "review.waiting",
        "external.go",
        "review.approved",
        "review.completed",
        "ship.started",
        "ship.completed",
        "pipeline.completed",
    ]
    events = run_json(tmp_path, "executions", "events", eid)
    assert [e["payload"] for e in events if e["eventType"] == "external.go"] == [{"ticket": "42"}]
    assert inbox_rows(tmp_path) == [
        ("event", "go", True, None),
        ("approve", "review", True, "'mallory' may not decide 'review'; approvers: alice"),
        ("approve", "review", True, None),
    ]


def test_reject_takes_the_run_to_its_end_without_the_gated_node(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, "gated.yaml", PIPELINE)
    with waiting_run(tmp_path, pipeline) as (proc, eid):
        proc_out = run_cli(tmp_path, "reject", eid, "review", "--by", "alice", "-m", "not today")
        assert proc_out.returncode == 0, proc_out.stderr
        assert proc_out.stdout.strip() == "review: rejected"
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    result = run_json(tmp_path, "executions", "show", eid)
    assert result["nodes"]["review"]["outputs"]["decision"] == "rejected"
    assert result["nodes"]["ship"]["status"] == "skipped"
    assert result["events"][3:7] == [
        "review.waiting",
        "review.rejected",
        "review.completed",
        "ship.skipped",
    ]


def test_requests_that_cannot_apply_are_refused_before_they_are_stored(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, "gated.yaml", PIPELINE)
    with waiting_run(tmp_path, pipeline) as (proc, eid):
        done = run_cli(tmp_path, "approve", eid, "build")
        assert done.returncode == 1
        assert done.stderr == (
            "error: node 'build' is not an approval node in pipeline gated; "
            "its approval nodes: review\n"
        )
        # A node the pipeline does not have is named as such, not "has not started".
        typo = run_cli(tmp_path, "reject", eid, "reveiw")
        assert typo.returncode == 1
        assert typo.stderr == (
            "error: node 'reveiw' does not exist in pipeline gated; its approval nodes: review\n"
        )
        bad_name = run_cli(tmp_path, "events", "send", eid, "Go Now")
        assert bad_name.returncode == 1
        assert "is not an event name" in bad_name.stderr
        unknown = run_cli(tmp_path, "approve", "no-such-id", "review")
        assert unknown.returncode == 1
        assert "no execution 'no-such-id'" in unknown.stderr
        unheard = run_cli(tmp_path, "events", "send", eid, "og")
        assert unheard.returncode == 1
        assert f"no trigger of execution {eid} waits for external.og" in unheard.stderr
        assert "(it listens for external.go)" in unheard.stderr
        assert inbox_rows(tmp_path) == []
        forced = run_json(tmp_path, "events", "send", eid, "og", "--force")
        assert (forced["applied"], forced["refusal"]) == (True, None)
        assert inbox_rows(tmp_path) == [("event", "og", True, None)]

        # Any unique prefix of the id will do, as with git.
        cancelled = run_json(tmp_path, "executions", "cancel", eid[:8], "--reason", "wrong build")
        assert cancelled["applied"] is True
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
    result = run_json(tmp_path, "executions", "show", eid, expect_code=0)
    assert result["status"] == "cancelled"
    assert result["nodes"]["review"]["status"] == "cancelled"
    late = run_cli(tmp_path, "approve", eid, "review")
    assert late.returncode == 1
    assert "has ended (cancelled)" in late.stderr


@pytest.mark.slow
def test_a_decision_posted_while_the_process_is_dead_applies_on_resume(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, "gated.yaml", PIPELINE)
    with waiting_run(tmp_path, pipeline) as (proc, eid):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    queued = run_cli(tmp_path, "approve", eid, "review", "--by", "alice", "--wait", "0")
    assert queued.returncode == 0, queued.stderr
    assert "queued as message 1" in queued.stdout
    assert f"whenflow resume {eid}" in queued.stdout
    sent = run_json(tmp_path, "events", "send", eid, "go", "--wait", "0")
    assert sent == {"messageId": 2, "applied": False, "refusal": None}

    wait_for_lease_expiry(tmp_path, eid)
    result = run_json(tmp_path, "resume", eid)
    assert result["status"] == "completed"
    assert result["outputs"] == {"shipped_by": "alice"}
    assert result["events"][3:] == [
        "review.waiting",
        "pipeline.resumed",
        "review.approved",
        "review.completed",
        "external.go",
        "ship.started",
        "ship.completed",
        "pipeline.completed",
    ]
    assert [row[2] for row in inbox_rows(tmp_path)] == [True, True]
    assert result["nodes"]["review"]["attempts"] == 1


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_the_approval_gate_example_ships_or_rolls_back(tmp_path: Path, decision: str) -> None:
    example = EXAMPLES / "approval_gate.yaml"
    with waiting_run(tmp_path, example, "Ship app-1.4.2.tar.gz to production?") as (proc, eid):
        decided = run_json(tmp_path, decision, eid, "review", "--by", "bob", "-m", "checked")
        assert decided["refusal"] is None
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    result = run_json(tmp_path, "executions", "show", eid)
    if decision == "approve":
        assert result["outputs"] == {"decision": "approved", "shipped": "app-1.4.2.tar.gz"}
        assert result["nodes"]["roll_back"]["status"] == "skipped"
        logs = run_json(tmp_path, "executions", "logs", eid, "--node", "ship")
        assert [line["message"] for line in logs] == ["shipping app-1.4.2.tar.gz, approved by bob"]
    else:
        assert result["outputs"] == {"decision": "rejected", "shipped": None}
        assert result["nodes"]["ship"]["status"] == "skipped"
        assert result["nodes"]["roll_back"]["outputs"] == {"reason": "checked"}
