"""The child side of `isolation: process`, and the JSON wire format both sides speak.

The parent runs `python -m whenflow.executors.python_child CHANNEL_FD`, writes
one JSON request to the child's stdin and closes it:

    {"callable": "pkg.mod:fn", "inputs": {...}, "sys_path": [...],
     "context": {"execution_id", "node_id", "attempt", "idempotency_key", "item_index"}}

The child answers on the inherited file descriptor CHANNEL_FD, one JSON object
per line, so whatever the task prints on stdout/stderr never mixes with the
protocol (the parent forwards those streams to the task log):

    {"kind": "emit", "name": ..., "payload": {...}}     ctx.emit
    {"kind": "log", "message": ..., "stream": ...}      ctx.log
    {"kind": "result", "outputs": {...}}                the call returned
    {"kind": "error", "type", "module", "message", "traceback"}   it raised

Only JSON crosses the boundary, never pickle. A `pathlib` path anywhere in the
inputs, outputs or payloads travels as `{"__path__": "/absolute/path"}` and is
turned back into a `Path` on the other side.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import IO, Any

PATH_KEY = "__path__"


def encode(value: Any) -> str:
    """One line of JSON for `value`; paths become `{"__path__": ...}`.

    Raises TypeError or ValueError for anything JSON cannot carry.
    """
    return json.dumps(value, default=_encode_special, ensure_ascii=False)


def decode(text: str) -> Any:
    """The value of one JSON line, with `{"__path__": ...}` turned back into `Path`."""
    return json.loads(text, object_hook=_decode_special)


def _encode_special(value: object) -> object:
    if isinstance(value, Path):
        return {PATH_KEY: str(value.absolute())}
    if isinstance(value, PurePath):
        return {PATH_KEY: str(value)}
    raise TypeError(f"{type(value).__name__} {value!r:.80} is not JSON-serialisable")


def _decode_special(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and isinstance(obj.get(PATH_KEY), str):
        return Path(obj[PATH_KEY])
    return obj


class _Channel:
    """The line-oriented JSON pipe to the parent; safe to use from any thread."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: Mapping[str, Any]) -> None:
        line = encode(message)  # encode first: a bad payload never writes half a line
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class ChildContext:
    """The TaskContext a function sees inside the child; emits and logs go to the parent."""

    def __init__(self, info: Mapping[str, Any], channel: _Channel) -> None:
        self._info = info
        self._channel = channel

    @property
    def execution_id(self) -> str:
        return str(self._info["execution_id"])

    @property
    def node_id(self) -> str:
        return str(self._info["node_id"])

    @property
    def attempt(self) -> int:
        return int(self._info["attempt"])

    @property
    def idempotency_key(self) -> str:
        return str(self._info["idempotency_key"])

    @property
    def item_index(self) -> int | None:
        index = self._info.get("item_index")
        return None if index is None else int(index)

    def emit(self, name: str, payload: Mapping[str, Any] | None = None) -> None:
        """Publish `<node>.<name>` through the parent; the payload must be JSON."""
        self._channel.send({"kind": "emit", "name": name, "payload": dict(payload or {})})

    def log(self, message: str, *, stream: str = "log") -> None:
        """Append a line to the task's log through the parent."""
        self._channel.send({"kind": "log", "message": str(message), "stream": stream})


def run_request(request: Mapping[str, Any], channel: _Channel) -> int:
    """Call the requested function and send its result or its error; the exit code."""
    # Imported here, not at the top: the wire format above stays dependency-free.
    from whenflow.domain.errors import base_exception_message
    from whenflow.executors.callables import prepare_callable
    from whenflow.executors.errors import TaskOutputError
    from whenflow.executors.tracebacks import task_traceback

    spec = str(request.get("callable", ""))
    ctx = ChildContext(request["context"], channel)
    try:
        prepared = prepare_callable(spec)
        arguments = prepared.arguments(request.get("inputs", {}), ctx)
        if prepared.is_async:
            value = _run_coroutine(prepared.fn(**arguments))
        else:
            value = prepared.fn(**arguments)
            if inspect.isawaitable(value):
                value = _run_coroutine(_awaited(value))
        outputs = prepared.outputs(value)
        try:
            channel.send({"kind": "result", "outputs": outputs})
        except (TypeError, ValueError) as exc:
            raise TaskOutputError(
                f"outputs of {spec!r} cannot leave the isolated process: {exc}; "
                "return JSON values (str, numbers, bools, None, lists, dicts) or pathlib.Path"
            ) from exc
    except BaseException as exc:  # everything the task raised goes back to the parent
        channel.send(
            {
                "kind": "error",
                "type": type(exc).__name__,
                "module": type(exc).__module__,
                "message": str(exc) if isinstance(exc, Exception) else base_exception_message(exc),
                "traceback": task_traceback(exc),
            }
        )
        return 1
    return 0


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _run_coroutine(coroutine: Any) -> Any:
    import asyncio  # ~70 ms to import: only children running async functions pay it

    return asyncio.run(coroutine)


def _extend_sys_path(entries: Sequence[str]) -> None:
    """Put the parent's import path first, so `module:function` resolves the same way."""
    wanted = [str(entry) for entry in entries]
    sys.path[:] = wanted + [entry for entry in sys.path if entry not in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `python -m whenflow.executors.python_child CHANNEL_FD`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m whenflow.executors.python_child CHANNEL_FD", file=sys.stderr)
        return 2
    fd = int(args[0])
    os.set_inheritable(fd, False)  # the task's own subprocesses must not get the channel
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        request = decode(sys.stdin.buffer.read().decode("utf-8"))
        _extend_sys_path(request.get("sys_path", []))
        return run_request(request, _Channel(stream))


if __name__ == "__main__":
    sys.exit(main())
