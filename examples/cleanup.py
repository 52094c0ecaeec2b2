"""Tasks of the cleanup_and_deadlines example: a lease taken, and released however it ends."""

from __future__ import annotations

from typing import Any


def take_lease() -> dict[str, Any]:
    return {"lease": "lease-42"}


def release(lease: str, status: str, reason: str) -> dict[str, Any]:
    return {"released": lease, "because": f"{status}: {reason}" if reason else status}
