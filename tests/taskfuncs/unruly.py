"""Task functions that misbehave: imported as `taskfuncs.unruly:...` by unit and e2e tests.

Each does what a careless or hostile task does: ends the process, raises a
`BaseException`, raises Python's own errors, prints a lot, prints or logs what
it was given, reads the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


def exit_process(code: int = 0) -> dict[str, Any]:
    sys.exit(code)


async def exit_process_async(code: int = 0) -> dict[str, Any]:
    await asyncio.sleep(0)
    sys.exit(code)


def hard_exit() -> dict[str, Any]:
    os._exit(0)


_BASE_EXCEPTIONS: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "BaseException": BaseException,
    "CancelledError": asyncio.CancelledError,
}


def raise_base(kind: str, message: str = "") -> dict[str, Any]:
    raise _BASE_EXCEPTIONS[kind](message) if message else _BASE_EXCEPTIONS[kind]()


async def raise_base_async(kind: str, message: str = "") -> dict[str, Any]:
    await asyncio.sleep(0)
    raise _BASE_EXCEPTIONS[kind](message) if message else _BASE_EXCEPTIONS[kind]()


def lookup_rows(data: dict[str, Any] | None = None) -> dict[str, Any]:
    table = dict(data or {})
    return {"rows": _rows_of(table)}


def _rows_of(table: dict[str, Any]) -> Any:
    return table["rows"]


def python_timeout(ctx: Any) -> dict[str, Any]:
    raise TimeoutError(f"the server did not answer (attempt {ctx.attempt})")


def flaky_timeout(ctx: Any) -> dict[str, Any]:
    if ctx.attempt < 2:
        raise TimeoutError("the server did not answer")
    return {"attempt": ctx.attempt}


def chatty(text: str = "hello") -> dict[str, Any]:
    print(text)
    print(f"to stderr: {text}", file=sys.stderr)
    sys.stdout.write(f"written: {text}\n")
    handler = logging.StreamHandler()  # as basicConfig makes it: bound to sys.stderr now
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("unruly.chatty")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.info("logged: %s", text)
    finally:
        logger.removeHandler(handler)
    return {"said": len(text)}


async def chatty_async(text: str = "hello") -> dict[str, Any]:
    await asyncio.sleep(0)
    print(f"async {text}")
    logging.getLogger("unruly.async").warning("async logged: %s", text)
    return {"said": len(text)}


def flood(megabytes: int = 8, line: int = 1000) -> dict[str, Any]:
    chunk = "x" * (line - 1)
    for _ in range(megabytes * 1024 * 1024 // line):
        print(chunk)
    return {"printed": megabytes}


def read_environment(ctx: Any) -> dict[str, Any]:
    """What of WHENFLOW_SECRET_* a task finds in os.environ and in /proc/self/environ."""
    secrets = {k: v for k, v in os.environ.items() if k.startswith("WHENFLOW_SECRET_")}
    print(f"environment secrets: {secrets}")
    process: list[str] = []
    proc = Path("/proc/self/environ")
    if proc.exists():
        entries = proc.read_bytes().decode("utf-8", "replace").split("\0")
        process = [e for e in entries if e.startswith("WHENFLOW_SECRET_") and not e.endswith("=")]
        print(f"process environment secrets: {process}")
    return {"environment_secrets": sorted(secrets), "process_secrets": process}


def echo(value: Any, ctx: Any) -> dict[str, Any]:
    print(f"print: {value}")
    print(f"stderr: {value}", file=sys.stderr)
    logging.basicConfig(level=logging.INFO)
    _log.info("logging: %s", value)
    ctx.log(f"ctx.log: {value}")
    return {"echo": f"echo {value}"}


_barrier = threading.Barrier(2)


def print_tagged(tag: str, times: int = 50) -> dict[str, Any]:
    """Print `tag` lines while another call does the same (both wait at a barrier first)."""
    _barrier.wait(timeout=10)
    for i in range(times):
        print(f"{tag} {i}", end="")
        print()
    sys.stdout.write(f"{tag} unfinished")
    return {"tag": tag}


def flood_stderr(megabytes: int = 8) -> dict[str, Any]:
    chunk = "e" * 999
    for _ in range(megabytes * 1024):
        sys.stderr.write(chunk + "\n")
    return {}


def write_around(text: str = "stray") -> dict[str, Any]:
    """Write to stdout where no proxy can see it: the file descriptor, a context-less thread."""
    os.write(1, f"fd {text}\n".encode())
    thread = threading.Thread(target=print, args=(f"thread {text}",))
    thread.start()
    thread.join()
    return {"wrote": text}


def next_of_empty() -> dict[str, Any]:
    """Raises StopIteration, which asyncio refuses to set on a future."""
    return {"first": next(iter([]))}


class _Unreadable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


class _UnreadableBase(BaseException):
    def __str__(self) -> str:
        raise RuntimeError("no words")


def raise_unreadable() -> dict[str, Any]:
    raise _Unreadable()


def raise_unreadable_base() -> dict[str, Any]:
    raise _UnreadableBase()


def deep_output(depth: int = 100_000) -> dict[str, Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return {"deep": value}


async def swallow_cancellation() -> dict[str, Any]:
    with contextlib.suppress(asyncio.CancelledError):  # as a bare `except:` would
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)
    return {}
