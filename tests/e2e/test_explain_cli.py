"""`whenflow explain EXECUTION NODE` through the real CLI and store (branch_and_join, held_join)."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import EXAMPLES, db_events, run_cli, run_json
from test_approvals_cli import waiting_run


def test_explain_a_skipped_and_a_started_branch_of_the_example(tmp_path: Path) -> None:
    result = run_json(tmp_path, "run", EXAMPLES / "branch_and_join.yaml", "-i", "amount=50")
    execution_id = result["executionId"]
    seqs = {event_type: seq for seq, event_type in db_events(tmp_path, execution_id)}

    skipped = run_json(tmp_path, "explain", execution_id, "manual_review")
    started = run_json(tmp_path, "explain", execution_id[:8], "auto_approve")

    assert skipped["state"] == "skipped"
    assert skipped["startWhen"]["atSeq"] == seqs["manual_review.skipped"]
    event_leaf, condition_leaf = skipped["startWhen"]["children"]
    assert event_leaf["value"] is True
    assert event_leaf["decidedBy"] == [
        {"seq": seqs["check.completed"], "eventType": "check.completed"}
    ]
    assert condition_leaf["source"] == "{{ check.large }}"
    assert condition_leaf["value"] is False
    assert started["startWhen"]["value"] is True
    assert started["verdict"].startswith(f"started at seq {seqs['auto_approve.started']}")


def test_explain_prints_the_tree_and_refuses_an_unknown_node(tmp_path: Path) -> None:
    result = run_json(tmp_path, "run", EXAMPLES / "branch_and_join.yaml", "-i", "amount=5000")
    execution_id = result["executionId"]

    text = run_cli(tmp_path, "explain", execution_id, "auto_approve")
    unknown = run_cli(tmp_path, "explain", execution_id, "nope")

    assert text.returncode == 0, text.stderr
    assert "skipped at seq" in text.stdout
    assert "{{ not check.large }} → false" in text.stdout
    assert unknown.returncode == 1
    assert "has no node 'nope'" in unknown.stderr


def test_explain_the_held_join_while_it_waits_and_after_its_release(tmp_path: Path) -> None:
    example = EXAMPLES / "held_join.yaml"
    with waiting_run(tmp_path, example, "Publish 120 orders?", node="release") as (proc, eid):
        seqs = {event_type: seq for seq, event_type in db_events(tmp_path, eid)}
        held = run_json(tmp_path, "explain", eid, "publish")
        waiting = run_json(tmp_path, "explain", eid, "release")

        assert held["state"] == "pending"
        assert held["startWhen"]["value"] is None
        orders, customers, release = held["startWhen"]["children"]
        assert (orders["value"], customers["value"], release["value"]) == (True, True, None)
        assert orders["decidedBy"] == [
            {"seq": seqs["load_orders.completed"], "eventType": "load_orders.completed"}
        ]
        assert release["reason"] == "not yet published; waiting for release"
        assert held["verdict"].startswith("not started: startWhen is unknown")
        assert waiting["state"] == "waiting"
        assert waiting["verdict"] == f"started at seq {seqs['release.waiting']}: startWhen was true"

        assert run_json(tmp_path, "approve", eid, "release")["applied"] is True
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

    seqs = {event_type: seq for seq, event_type in db_events(tmp_path, eid)}
    started = run_json(tmp_path, "explain", eid, "publish")
    skipped = run_json(tmp_path, "explain", eid, "discard")
    assert started["state"] == "completed"
    assert started["startWhen"]["children"][2]["decidedBy"] == [
        {"seq": seqs["release.approved"], "eventType": "release.approved"}
    ]
    assert skipped["state"] == "skipped"
    assert skipped["startWhen"]["value"] is False
