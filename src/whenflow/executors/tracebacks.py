"""A task's traceback as its author wants to read it: the task's frames, not whenflow's."""

from __future__ import annotations

import traceback
from pathlib import Path

_WHENFLOW_DIR = str(Path(__file__).resolve().parents[1])


def task_traceback(exc: BaseException | None) -> str:
    """`exc` formatted like Python's own report, without the frames of whenflow's code.

    Chained exceptions (`raise ... from`, an error while handling another) are
    kept. When every frame is whenflow's, the last one stays, so the report
    still says where the error came from.
    """
    if exc is None:
        return ""
    report = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    pending = [report]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        frames = [f for f in current.stack if not _is_whenflow(f.filename)]
        if not frames and current.stack:
            frames = [current.stack[-1]]
        current.stack = traceback.StackSummary.from_list(frames)
        pending.extend(c for c in (current.__cause__, current.__context__) if c is not None)
    return "".join(report.format()).rstrip("\n")


def _is_whenflow(filename: str) -> bool:
    return filename.startswith(_WHENFLOW_DIR)
