"""Trivial tasks for the benchmark: the cost measured is the engine's, not the work's."""

from __future__ import annotations

from typing import Any


def identity(v: Any = None) -> dict[str, Any]:
    return {"v": v}
