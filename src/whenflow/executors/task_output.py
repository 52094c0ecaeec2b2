"""What an in-process python task prints goes to its attempt's log, never to the terminal.

A sync function runs in a worker thread and an async one on the engine's
loop, both in whenflow's own process, so their `print()`, `sys.stdout` /
`sys.stderr` writes and `logging` output would otherwise land on the CLI's
stdout (before the JSON of `whenflow run --json`). While a python executor
is open, `sys.stdout` and `sys.stderr` are `StreamProxy` objects: a write
made inside an attempt (found through a context variable that the executor
sets around the call, and that worker threads inherit with the caller's
context) is split into lines, as a shell task's output is, and logged to
that attempt with the stream's name; any other write goes to the real
stream. `logging` handlers that already write to the real streams are
pointed at the proxies for as long as they are installed.

Not captured: writes to the file descriptors themselves (`os.write(1, ...)`,
`sys.stdout.buffer`, a C extension's printf); `isolation: process` captures
those, since the child's streams are pipes.
"""

from __future__ import annotations

import contextvars
import io
import logging
import sys
import threading
from typing import Any, TextIO

from whenflow.domain.task_io import TaskContext
from whenflow.executors.subprocess_io import MAX_LOG_LINE

_attempt_output: contextvars.ContextVar[AttemptOutput | None] = contextvars.ContextVar(
    "whenflow_attempt_output", default=None
)


class AttemptOutput:
    """One attempt's captured writes, split into lines per stream and logged to its ctx."""

    __slots__ = ("_ctx", "_lock", "_pending")

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx
        self._pending: dict[str, str] | None = None  # made by the first write: most never print
        self._lock = threading.Lock()

    def write(self, stream: str, text: str) -> None:
        with self._lock:
            if self._pending is None:
                self._pending = {}
            pending = self._pending.get(stream, "") + text
            *lines, rest = pending.split("\n")
            while len(rest) > MAX_LOG_LINE:
                lines.append(rest[:MAX_LOG_LINE])
                rest = rest[MAX_LOG_LINE:]
            self._pending[stream] = rest
        for line in lines:
            self._log(line, stream)

    def close(self) -> None:
        """Log what is left without a line end."""
        if self._pending is None:
            return
        with self._lock:
            pending, self._pending = self._pending or {}, {}
        for stream, rest in pending.items():
            if rest:
                self._log(rest, stream)

    def _log(self, line: str, stream: str) -> None:
        for piece in _pieces(line.removesuffix("\r")):
            self._ctx.log(piece, stream=stream)


def _pieces(line: str) -> list[str]:
    if len(line) <= MAX_LOG_LINE:
        return [line]
    return [line[i : i + MAX_LOG_LINE] for i in range(0, len(line), MAX_LOG_LINE)]


def capture(ctx: TaskContext) -> tuple[AttemptOutput, contextvars.Token[AttemptOutput | None]]:
    """Route this context's writes (and those of threads started from it) to `ctx`'s log."""
    output = AttemptOutput(ctx)
    return output, _attempt_output.set(output)


def release(output: AttemptOutput, token: contextvars.Token[AttemptOutput | None]) -> None:
    """Stop routing this context's writes; log the last unfinished line."""
    _attempt_output.reset(token)
    output.close()


class StreamProxy(io.TextIOBase):
    """Stands in for `sys.stdout` or `sys.stderr`: an attempt's writes go to its log."""

    def __init__(self, name: str, original: TextIO) -> None:
        super().__init__()
        self._name = name
        self.original = original

    def write(self, text: str) -> int:
        output = _attempt_output.get()
        if output is None:
            return self.original.write(text)
        output.write(self._name, str(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _attempt_output.get() is None:
            self.original.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return _attempt_output.get() is None and self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.original, "errors", None)

    def __getattr__(self, name: str) -> Any:  # buffer, mode, name, ...: the real stream's
        return getattr(self.original, name)


_lock = threading.Lock()
_installs = 0
_proxies: dict[str, StreamProxy] = {}
_handlers: list[tuple[logging.StreamHandler[Any], TextIO]] = []


def install() -> None:
    """Put the proxies in place (counted: each call needs one `uninstall`)."""
    global _installs
    with _lock:
        _installs += 1
        if _installs > 1:
            return
        for name in ("stdout", "stderr"):
            original = getattr(sys, name)
            proxy = StreamProxy(name, original)
            _proxies[name] = proxy
            setattr(sys, name, proxy)
        originals = {id(p.original): p for p in _proxies.values()}
        for handler in _stream_handlers():
            target = originals.get(id(handler.stream))
            if target is not None:
                _handlers.append((handler, handler.stream))
                _point(handler, target)


def uninstall() -> None:
    """Undo the last `install`; the real streams are back once every install is undone."""
    global _installs
    with _lock:
        if _installs == 0:
            return
        _installs -= 1
        if _installs:
            return
        for name, proxy in _proxies.items():
            if getattr(sys, name) is proxy:  # someone who replaced it since keeps theirs
                setattr(sys, name, proxy.original)
        for handler, stream in _handlers:
            if isinstance(handler.stream, StreamProxy):
                _point(handler, stream)
        for handler in _stream_handlers():  # made while installed (a task's basicConfig)
            if isinstance(handler.stream, StreamProxy):
                _point(handler, handler.stream.original)
        _proxies.clear()
        _handlers.clear()


def _point(handler: logging.StreamHandler[Any], stream: Any) -> None:
    # Not `setStream`: it flushes the old stream, which may be closed by now.
    handler.acquire()
    try:
        handler.stream = stream
    finally:
        handler.release()


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    loggers: list[Any] = [logging.getLogger()]
    loggers.extend(logging.Logger.manager.loggerDict.values())
    found: list[logging.StreamHandler[Any]] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and handler not in found:
                found.append(handler)
    return found
