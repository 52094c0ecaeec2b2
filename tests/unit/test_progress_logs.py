"""`whenflow run` shows task output in its progress, as the attempt's log stores it."""

from __future__ import annotations

import io

from whenflow.cli.progress import Progress
from whenflow.domain.events import Event
from whenflow.domain.records import LogAppended


def event(event_type: str, **payload: object) -> Event:
    return Event("id", "exec-1", 1, event_type, event_type.partition(".")[0], 0.0, payload)


def line(node: str, message: str, item: int = -1) -> LogAppended:
    return LogAppended("exec-1", node, 1, item, "stdout", message, 0.0)


def test_plain_progress_prints_each_log_line_under_its_node() -> None:
    stream = io.StringIO()  # not a terminal: plain lines
    with Progress(["extract", "load"], stream=stream) as progress:
        progress.on_event(event("extract.started", attempt=1))
        progress.on_log(line("extract", "read 3 rows"))
        progress.on_log(line("load", "item done", item=2))
    printed = [text.partition(" ")[2] for text in stream.getvalue().splitlines()]
    assert printed == [
        "extract started (attempt 1)",
        "extract | read 3 rows",
        "load[2] | item done",
    ]


def test_the_table_shows_a_running_nodes_last_line() -> None:
    progress = Progress(["extract"], stream=io.StringIO())
    progress.on_event(event("extract.started", attempt=1))
    progress.on_log(line("extract", "first"))
    progress.on_log(line("extract", "second"))
    assert progress.model.rows["extract"].detail == "second"
    progress.on_event(event("extract.completed"))
    progress.on_log(line("extract", "late line"))
    assert progress.model.rows["extract"].detail == ""
