"""Every pipeline in examples/ run end to end through `whenflow run --json`."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import EXAMPLES, db_events, run_cli, run_json, terminal_events


def test_feature_engineering_with_rows_transforms_and_skips_notify(tmp_path: Path) -> None:
    result = run_json(
        tmp_path,
        "run",
        EXAMPLES / "feature_engineering.yaml",
        "-i",
        "start_date=2024-01-01",
        "-i",
        "end_date=2024-01-31",
    )

    assert result["status"] == "completed"
    nodes = result["nodes"]
    assert nodes["extract_data"]["outputs"]["row_count"] == 31
    assert nodes["transform_data"]["status"] == "completed"
    assert nodes["transform_data"]["outputs"]["feature_count"] == 31
    assert nodes["notify_empty"]["status"] == "skipped"
    assert nodes["notify_empty"]["attempts"] == 0
    # 25 of 31 days have a full 7-day window.
    assert result["outputs"] == {"quality": round(25 / 31, 4)}
    assert result["events"] == [
        "pipeline.started",
        "extract_data.started",
        "extract_data.completed",
        "notify_empty.skipped",
        "transform_data.started",
        "transform_data.completed",
        "pipeline.completed",
    ]


def test_feature_engineering_empty_range_notifies_and_skips_transform(tmp_path: Path) -> None:
    result = run_json(
        tmp_path,
        "run",
        EXAMPLES / "feature_engineering.yaml",
        "-i",
        "start_date=2024-02-01",
        "-i",
        "end_date=2024-01-31",
    )

    assert result["status"] == "completed"
    nodes = result["nodes"]
    assert nodes["extract_data"]["outputs"]["row_count"] == 0
    assert nodes["transform_data"]["status"] == "skipped"
    assert nodes["transform_data"]["outputs"] == {}
    assert nodes["notify_empty"]["status"] == "completed"
    assert result["events"] == [
        "pipeline.started",
        "extract_data.started",
        "extract_data.completed",
        "transform_data.skipped",
        "notify_empty.started",
        "notify_empty.completed",
        "pipeline.completed",
    ]
    # The event log in the database is the same sequence, numbered 1..N.
    stored = db_events(tmp_path, result["executionId"])
    assert [seq for seq, _ in stored] == list(range(1, len(result["events"]) + 1))
    assert [etype for _, etype in stored] == result["events"]
    # The shell task's stdout reached the log store.
    logs = run_json(tmp_path, "executions", "logs", result["executionId"])
    assert [(x["nodeId"], x["stream"], x["message"]) for x in logs] == [
        ("notify_empty", "stdout", "no rows")
    ]


@pytest.mark.parametrize("shards", [1, 5])
def test_fan_out_fan_in_keeps_item_order_and_sums(tmp_path: Path, shards: int) -> None:
    result = run_json(tmp_path, "run", EXAMPLES / "fan_out_fan_in.yaml", "-i", f"shards={shards}")

    assert result["status"] == "completed"
    results = result["nodes"]["count_words"]["outputs"]["results"]
    # Shard i has i + 1 lines of three words; results come back in input order.
    assert results == [{"shard": i, "words": 3 * (i + 1)} for i in range(shards)]
    expected_total = 3 * sum(range(1, shards + 1))
    assert result["nodes"]["total"]["outputs"] == {"words": expected_total}
    assert result["outputs"] == {"total_words": expected_total, "shards": shards}
    events = result["events"]
    assert events.count("count_words.item_completed") == shards
    assert events.count("count_words.counted") == shards
    assert events.count("count_words.started") == 1
    assert terminal_events(events, "count_words") == ["count_words.completed"]
    assert events.index("count_words.completed") < events.index("total.started")


def test_fan_out_fan_in_uses_the_input_default(tmp_path: Path) -> None:
    result = run_json(tmp_path, "run", EXAMPLES / "fan_out_fan_in.yaml")

    assert result["status"] == "completed"
    assert result["outputs"] == {"total_words": 3 * sum(range(1, 7)), "shards": 6}


def test_retry_timeout_retries_flaky_and_times_out_slow(tmp_path: Path) -> None:
    result = run_json(tmp_path, "run", EXAMPLES / "retry_timeout.yaml")

    # too_slow failed but allows failure, so the execution completes (exit 0).
    assert result["status"] == "completed"
    events = result["events"]
    flaky = result["nodes"]["flaky"]
    assert flaky["status"] == "completed"
    assert flaky["attempts"] == 3
    assert flaky["outputs"] == {"attempt": 3}
    assert events.count("flaky.retrying") == 2
    assert events.count("flaky.started") == 3
    assert terminal_events(events, "flaky") == ["flaky.completed"]

    slow = result["nodes"]["too_slow"]
    assert slow["status"] == "failed"
    assert slow["attempts"] == 2
    assert "timed out" in slow["error"]
    assert events.count("too_slow.started") == 2
    assert events.count("too_slow.retrying") == 1
    assert terminal_events(events, "too_slow") == ["too_slow.failed"]

    assert result["nodes"]["report"]["status"] == "completed"
    assert result["outputs"] == {"flaky_succeeded_on": 3, "slow_timed_out": True}
    assert events[-1] == "pipeline.completed"


@pytest.mark.parametrize(
    ("amount", "ran", "skipped", "decision"),
    [
        (5000, "manual_review", "auto_approve", "reviewed"),
        (10, "auto_approve", "manual_review", "auto"),
    ],
)
def test_branch_and_join_runs_one_branch_and_joins_once(
    tmp_path: Path, amount: int, ran: str, skipped: str, decision: str
) -> None:
    result = run_json(tmp_path, "run", EXAMPLES / "branch_and_join.yaml", "-i", f"amount={amount}")

    assert result["status"] == "completed"
    nodes = result["nodes"]
    assert nodes[ran]["status"] == "completed"
    assert nodes[ran]["outputs"]["decision"] == decision
    assert nodes[skipped]["status"] == "skipped"
    assert nodes["join"]["status"] == "completed"
    assert nodes["join"]["attempts"] == 1
    assert result["outputs"] == {"decision": decision}
    events = result["events"]
    assert events.count("join.started") == 1
    assert events.count("join.completed") == 1
    assert events == [
        "pipeline.started",
        "check.started",
        "check.completed",
        f"{skipped}.skipped",
        f"{ran}.started",
        f"{ran}.completed",
        "join.started",
        "join.completed",
        "pipeline.completed",
    ]


def test_every_example_validates_and_graphs(tmp_path: Path) -> None:
    examples = sorted([*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("*/pipeline.yaml")])
    assert len(examples) >= 4
    for path in examples:
        proc = run_cli(tmp_path, "validate", path)
        assert proc.returncode == 0, proc.stderr
        assert "is valid" in proc.stdout
    # validate never touches the database layer.
    assert not (tmp_path / "whenflow.db").exists()
