"""examples/novel_processing.yaml (seed 003) end to end: forEach over chapters, retries, a timeout."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from cli_helpers import EXAMPLES, run_json

PIPELINE = EXAMPLES / "novel_processing.yaml"
NOVEL = EXAMPLES / "novel" / "lighthouse.txt"


def retrying(home: Path, execution_id: str) -> list[tuple[int, str]]:
    """(item index, error type) of every `process_chapter.retrying` event."""
    events = run_json(home, "executions", "events", execution_id)
    return [
        (e["payload"]["index"], e["payload"]["error_type"])
        for e in events
        if e["eventType"] == "process_chapter.retrying"
    ]


def test_every_chapter_is_processed_and_the_flaky_one_retried(tmp_path: Path) -> None:
    result = run_json(tmp_path, "run", PIPELINE)

    assert result["status"] == "completed"
    bodies = re.split(r"^## Chapter \d+: .+$", NOVEL.read_text(encoding="utf-8"), flags=re.M)[1:]
    assert result["outputs"] == {
        "title": "The Keeper of Gull Rock",
        "chapters": 5,
        "words": sum(len(re.findall(r"[A-Za-z']+", b)) for b in bodies),
        "characters": ["Mira", "Tomas"],
        "attempts": [1, 2, 1, 1, 1],
    }
    items = result["nodes"]["process_chapter"]["outputs"]["results"]
    assert [i["title"] for i in items] == [
        "The Letter",
        "The Ferryman",
        "The Lamp Room",
        "The Long Tide",
        "The Logbook",
    ]
    assert items[1]["characters"] == ["Mira", "Tomas"]
    assert retrying(tmp_path, result["executionId"]) == [(1, "TransientError")]

    summary_path = Path(
        result["nodes"]["assemble"]["outputs"]["summary"]["uri"].removeprefix("file://")
    )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    assert [c["number"] for c in summary["chapters"]] == [1, 2, 3, 4, 5]
    assert summary["chapters"][0]["opening"].startswith("Mira Holt found the letter")


def test_a_hung_chapter_times_out_and_its_retry_succeeds(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_json(tmp_path, "run", PIPELINE, "-i", "flaky_chapter=0", "-i", "slow_chapter=3")
    elapsed = time.monotonic() - started

    assert result["status"] == "completed"
    assert result["outputs"]["attempts"] == [1, 1, 2, 1, 1]
    assert retrying(tmp_path, result["executionId"]) == [(2, "TaskTimeout")]
    # The 10 s timeout killed the hung attempt: nobody waited for its 60 s.
    assert elapsed < 50, elapsed
