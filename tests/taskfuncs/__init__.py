"""Importable task functions for the executor tests (`callable: taskfuncs:<name>`).

The tests put `tests/` on sys.path with `monkeypatch.syspath_prepend`, so these
resolve by module name exactly like a user's `package.module:function`, in a
thread and in an isolated child process alike.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any, TypedDict

from whenflow.executors.task_decorator import task

NOT_CALLABLE = 42

# Released by the thread-cancellation test so its worker thread can end.
release_blocked_thread = threading.Event()


class CustomError(Exception):
    """An exception type defined by user code."""


class Stats(TypedDict):
    count: int
    mean: float


def add(a: int, b: int = 1) -> dict[str, int]:
    return {"sum": a + b}


def thread_ident() -> dict[str, Any]:
    return {"thread": threading.get_ident()}


async def async_ident() -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"thread": threading.get_ident()}


def with_ctx(ctx: Any, n: int) -> dict[str, Any]:
    ctx.emit("progress", {"n": n})
    ctx.log(f"working on {n}")
    return {
        "node": ctx.node_id,
        "key": ctx.idempotency_key,
        "attempt": ctx.attempt,
        "thread": threading.get_ident(),
    }


def plain_int() -> int:
    return 42


def returns_none() -> None:
    return None


@task
def doubled(x: int) -> int:
    return x * 2


@task(name="stats", version="1.2.3")
def stats(values: list[float]) -> Stats:
    return {"count": len(values), "mean": sum(values) / len(values)}


def raises_value_error(message: str) -> None:
    raise ValueError(message)


def raises_custom() -> None:
    raise CustomError("custom boom")


def make_files(directory: str) -> dict[str, Any]:
    path = Path(directory) / "out.txt"
    path.write_text("hello", encoding="utf-8")
    return {"file": path, "files": [path], "count": 1}


def read_file(file: Path) -> dict[str, Any]:
    return {"is_path": isinstance(file, Path), "text": file.read_text(encoding="utf-8")}


def block_in_thread(ctx: Any) -> dict[str, Any]:
    ctx.emit("started", {})
    release_blocked_thread.wait()
    return {}


def block_forever(ctx: Any) -> dict[str, Any]:
    """Report the child's pid, then block until killed."""
    ctx.emit("started", {"pid": os.getpid()})
    threading.Event().wait()
    return {}


def chatty() -> dict[str, Any]:
    print("to stdout")
    print("to stderr", file=sys.stderr)
    return {"ok": True}


def exit_hard() -> None:
    sys.stderr.write("about to die\n")
    sys.stderr.flush()
    os._exit(3)


def returns_object() -> dict[str, Any]:
    return {"value": object()}


def item_index(ctx: Any) -> dict[str, Any]:
    return {"index": ctx.item_index, "execution": ctx.execution_id}
