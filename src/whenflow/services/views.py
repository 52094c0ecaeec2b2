"""Read models the CLI and API print: plain data with a `to_json`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from whenflow.domain.events import Event
from whenflow.domain.registry import RegistryVersion

MAX_DISPLAY = 120


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    execution_id: str
    pipeline: str
    version: str
    status: str
    created: str
    finished: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "executionId": self.execution_id,
            "pipeline": self.pipeline,
            "version": self.version,
            "status": self.status,
            "createdAt": self.created,
            "finishedAt": self.finished,
        }


@dataclass(frozen=True, slots=True)
class EventView:
    seq: int
    event_type: str
    source: str
    timestamp: float
    payload: Mapping[str, Any]
    event_id: str

    @property
    def time(self) -> str:
        return iso_time(self.timestamp) or ""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "eventId": self.event_id,
            "eventType": self.event_type,
            "source": self.source,
            "timestamp": self.time,
            "payload": dict(self.payload),
        }


def event_view(event: Event) -> EventView:
    return EventView(
        event.seq, event.event_type, event.source, event.timestamp, event.payload, event.event_id
    )


@dataclass(frozen=True, slots=True)
class VariableView:
    scope: str
    name: str
    type: str
    value: Any
    artifact: Mapping[str, Any] | None

    @property
    def display(self) -> str:
        if self.artifact is not None:
            return f"<artifact {self.artifact['uri']} {self.artifact['size']} bytes>"
        text = json.dumps(self.value, default=str, ensure_ascii=False)
        return text if len(text) <= MAX_DISPLAY else text[: MAX_DISPLAY - 1] + "…"

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "name": self.name,
            "type": self.type,
            "value": self.value,
            "artifact": dict(self.artifact) if self.artifact else None,
        }


@dataclass(frozen=True, slots=True)
class LogView:
    node_id: str
    attempt: int
    item_index: int | None
    stream: str
    message: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeId": self.node_id,
            "attempt": self.attempt,
            "itemIndex": self.item_index,
            "stream": self.stream,
            "message": self.message,
            "at": iso_time(self.at),
        }


def registry_version_view(entry: RegistryVersion) -> dict[str, Any]:
    """A registry version as the API and `pipelines ... --json` show it (camelCase)."""
    return {
        "kind": str(entry.kind),
        "name": entry.name,
        "version": entry.version,
        "status": str(entry.status),
        "description": entry.description,
        "sha256": entry.sha256,
        "createdAt": iso_time(entry.created_at),
        "updatedAt": iso_time(entry.updated_at),
        "publishedAt": iso_time(entry.published_at),
    }
