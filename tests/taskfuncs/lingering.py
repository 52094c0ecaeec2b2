"""A sync task whose first attempt blocks until released: for the thread-retry tests."""

from __future__ import annotations

import threading
from typing import Any

release = threading.Event()
marks: list[str] = []


def block_first(ctx: Any) -> dict[str, Any]:
    marks.append(f"start {ctx.attempt}")
    if ctx.attempt == 1:
        release.wait(30)
    marks.append(f"end {ctx.attempt}")
    return {"attempt": ctx.attempt}
