"""Variables of the pool and references to artifacts (DESIGN.md §6)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """Where a large value or a file lives; the pool keeps this instead of the bytes.

    `kind` is `file` for a file a task produced and `value` for a JSON value
    offloaded because it was over the size threshold.
    """

    uri: str
    size: int
    sha256: str
    content_type: str
    kind: str = "file"
    filename: str = ""
    schema: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "kind": self.kind,
            "filename": self.filename,
            "schema": dict(self.schema) if self.schema is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArtifactRef:
        return cls(
            uri=str(data["uri"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            content_type=str(data["content_type"]),
            kind=str(data.get("kind", "file")),
            filename=str(data.get("filename", "")),
            schema=data.get("schema"),
        )


@dataclass(frozen=True, slots=True)
class Variable:
    """One value of the pool: `scope` is `pipeline.input`, `system` or a node id."""

    scope: str
    name: str
    value: Any
    type: str
    created_at: float
    metadata: Mapping[str, Any] = field(default_factory=dict)
    artifact: ArtifactRef | None = None
