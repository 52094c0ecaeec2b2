"""Live progress of `whenflow run`: a rich table on a terminal, plain lines otherwise.

Task output (each attempt's log, as stored: masked and capped) is shown too:
the last line of a running node in the table's detail column, every line
(`HH:MM:SS node | line`) in plain mode.
Both show the execution id from the start, and a node waiting for a decision
shows the exact command that decides it, id included.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from whenflow.domain.events import EXTERNAL_SOURCE, PIPELINE_SOURCE, Event
from whenflow.domain.records import LogAppended

_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "waiting": "magenta",
    "completed": "green",
    "failed": "bold red",
    "skipped": "dim",
    "stopped": "yellow",
    "cancelled": "red",
}
_STATE_EVENTS = {
    "started": "running",
    "retrying": "retrying",
    "completed": "completed",
    "failed": "failed",
    "skipped": "skipped",
    "stopped": "stopped",
    "cancelled": "cancelled",
    "waiting": "waiting",
}
MAX_ROWS = 25


@dataclass
class _Row:
    state: str = "pending"
    attempt: int = 0
    started: float | None = None
    ended: float | None = None
    detail: str = ""
    items_done: int = 0
    items_total: int | None = None


@dataclass
class ProgressModel:
    """Node states as seen through the event stream."""

    node_ids: list[str]
    execution_id: str = ""
    rows: dict[str, _Row] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.rows = {n: _Row() for n in self.node_ids}

    def apply(self, event: Event) -> str | None:
        """Update from one event; return a plain-text line worth printing, if any."""
        source, _, name = event.event_type.partition(".")
        row = self.rows.get(source)
        if row is None and source not in (PIPELINE_SOURCE, EXTERNAL_SOURCE):
            # A node not listed up front (`resume` does not load the pipeline): a row now.
            row = self.rows[source] = _Row()
        payload: dict[str, Any] = dict(event.payload)
        if row is None:
            if source == "pipeline":
                return f"pipeline {name}"
            return f"{event.event_type} {payload}" if payload else event.event_type
        now = time.monotonic()
        if name in _STATE_EVENTS:
            row.state = _STATE_EVENTS[name]
            if name == "started":
                row.attempt = int(payload.get("attempt", row.attempt + 1))
                row.started = row.started or now
                if "items" in payload:
                    row.items_total = int(payload["items"])
            if row.state in ("completed", "failed", "skipped", "stopped", "cancelled"):
                row.ended = now
            detail = (
                payload.get("message") or payload.get("reason") or payload.get("error_type") or ""
            )
            row.detail = str(detail)
            attempt = (
                f" (attempt {row.attempt})" if name in ("started", "retrying", "failed") else ""
            )
            suffix = f": {row.detail}" if row.detail else ""
            if name == "waiting":
                suffix += f"; decide with {decide_command(event.execution_id, source)}"
            return f"{source} {name}{attempt}{suffix}"
        if name in ("item_completed", "item_failed"):
            row.items_done += 1
            return None
        row.detail = f"{name} {payload}" if payload else name
        return f"{source} {name} {payload}" if payload else f"{source} {name}"

    def log(self, line: LogAppended) -> str:
        """Note a task's log line; return it as a plain-text line."""
        row = self.rows.get(line.node_id)
        if row is not None and row.state in ("running", "retrying"):
            row.detail = line.message
        item = f"[{line.item_index}]" if line.item_index >= 0 else ""
        return f"{line.node_id}{item} | {line.message}"

    def render(self) -> RenderableType:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row.state] = counts.get(row.state, 0) + 1
        summary = Text(f"execution {self.execution_id}  " if self.execution_id else "")
        summary.append(f"{time.monotonic() - self.started:6.1f}s  ")
        for state, count in sorted(counts.items()):
            summary.append(f"{state} {count}  ", style=_STYLE.get(state, ""))
        table = Table(show_edge=False, pad_edge=False, box=None)
        for col in ("node", "status", "try", "time", "detail"):
            table.add_column(col)
        rows = list(self.rows.items())
        if len(rows) > MAX_ROWS:
            active = [r for r in rows if r[1].state in ("running", "retrying", "waiting", "failed")]
            rows = active[:MAX_ROWS]
        for node_id, row in rows:
            elapsed = ""
            if row.started is not None:
                elapsed = f"{(row.ended or time.monotonic()) - row.started:.1f}s"
            detail = row.detail
            if row.items_total is not None:
                detail = f"{row.items_done}/{row.items_total} items " + detail
            table.add_row(
                node_id,
                Text(row.state, style=_STYLE.get(row.state, "")),
                str(row.attempt or ""),
                elapsed,
                detail[:80],
            )
        waiting = [n for n, row in self.rows.items() if row.state == "waiting"]
        decide = [
            Text(f"{node_id} waits for a decision: {decide_command(self.execution_id, node_id)}")
            for node_id in waiting[:MAX_ROWS]
        ]
        return Group(summary, table, *decide)


def decide_command(execution_id: str, node_id: str) -> str:
    """The commands that approve or reject a waiting node, ready to paste."""
    approve = f"whenflow approve {execution_id} {node_id}"
    return f"`{approve}` or `whenflow reject {execution_id} {node_id}`"


class Progress:
    """Chooses live table or plain lines; use as a context manager around the run."""

    def __init__(
        self,
        node_ids: list[str],
        *,
        execution_id: str = "",
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.model = ProgressModel(node_ids, execution_id)
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.console = Console(file=self.stream)
        self.live: Live | None = None
        self._announced = False

    def __enter__(self) -> Progress:
        if self.enabled and self.console.is_terminal:
            self.live = Live(
                get_renderable=self.model.render, console=self.console, refresh_per_second=8
            )
            self.live.__enter__()
        return self

    def _print(self, line: str, at: float | None = None) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(at))
        try:
            print(f"{stamp} {line}", file=self.stream, flush=True)
        except OSError:  # the reader went away (`| head`): progress stops, the run goes on
            self.enabled = False

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self.model.render(), refresh=True)
            self.live.__exit__(None, None, None)

    def on_log(self, line: LogAppended) -> None:
        text = self.model.log(line)
        if self.enabled and self.live is None:
            self._print(text, line.at)

    def on_event(self, event: Event) -> None:
        line = self.model.apply(event)
        if self.enabled and self.live is None and line:
            if not self._announced and self.model.execution_id:
                # Printed with the first event: once the execution exists.
                self._print(f"execution {self.model.execution_id}", event.timestamp)
            self._announced = True
            self._print(line, event.timestamp)
