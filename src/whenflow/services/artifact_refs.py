"""The artifact references an execution's variables hold (what garbage collection keeps)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from whenflow.domain.variables import ArtifactRef, Variable
from whenflow.engine.variable_pool import ARTIFACT_MARKER


def referenced_artifacts(variables: Iterable[Variable]) -> Iterator[ArtifactRef]:
    """Every artifact reference the variables hold (forEach items nest theirs in values)."""
    for variable in variables:
        if variable.artifact is not None:
            yield variable.artifact
        yield from _nested_refs(variable.value)


def _nested_refs(value: Any) -> Iterator[ArtifactRef]:
    if isinstance(value, dict):
        marked = value.get(ARTIFACT_MARKER) if len(value) == 1 else None
        if isinstance(marked, dict):
            ref = _as_ref(marked)
            if ref is not None:
                yield ref
            return
        for item in value.values():
            yield from _nested_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _nested_refs(item)


def _as_ref(data: Mapping[str, Any]) -> ArtifactRef | None:
    try:
        return ArtifactRef.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None  # task data shaped like a marker, not a reference
