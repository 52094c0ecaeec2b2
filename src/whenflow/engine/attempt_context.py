"""The `ctx` a running task gets: emit custom events and log lines, from any thread.

Every line an attempt logs passes through `AttemptContext.log` (shell output,
an isolated child's streams, a python task's prints, `ctx.log`), so this is
where one attempt's log is capped: past `log_limit` bytes its lines are
dropped, and `close()` adds one last line that says how much was dropped.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from whenflow.domain.events import EVENT_NAME, RESERVED_NODE_EVENTS, UndeclaredEvent

EmitSink = Callable[[str, int, int, str, Mapping[str, Any]], None]
LogSink = Callable[[str, int, int, str, str], None]

DEFAULT_TASK_LOG_LIMIT = 4 * 1024 * 1024
"""Bytes one attempt may log (`WHENFLOW_TASK_LOG_LIMIT`); later lines are dropped."""
TRUNCATION_STREAM = "whenflow"


class AttemptContext:
    """Implements `whenflow.domain.task_io.TaskContext` for one attempt."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        execution_id: str,
        node_id: str,
        attempt: int,
        item_index: int | None,
        idempotency_key: str,
        emit_sink: EmitSink,
        log_sink: LogSink,
        log_limit: int | None = DEFAULT_TASK_LOG_LIMIT,
        declared_events: frozenset[str] = frozenset(),
    ) -> None:
        """`log_limit`: bytes of log lines this attempt may write (None: no limit)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._execution_id = execution_id
        self._node_id = node_id
        self._attempt = attempt
        self._item_index = item_index
        self._key = idempotency_key
        self._emit_sink = emit_sink
        self._log_sink = log_sink
        self._log_limit = log_limit
        self._log_left = log_limit
        self._dropped_bytes = 0
        self._dropped_lines = 0
        self._log_lock = threading.Lock()
        self._closed = False
        self._declared = declared_events

    @property
    def execution_id(self) -> str:
        return self._execution_id

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def idempotency_key(self) -> str:
        return self._key

    @property
    def item_index(self) -> int | None:
        return self._item_index

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        # On the loop thread, act now so an event emitted just before returning
        # is handled before the attempt's result; from a worker thread, queue it
        # (the loop runs callbacks in order, so it still precedes the result).
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def emit(self, name: str, payload: Mapping[str, Any] | None = None) -> None:
        if not EVENT_NAME.match(name) or name in RESERVED_NODE_EVENTS:
            raise ValueError(
                f"custom event name {name!r} must match [a-z_][a-z0-9_]* and not be one of "
                f"{', '.join(sorted(RESERVED_NODE_EVENTS))}"
            )
        if name not in self._declared:
            raise UndeclaredEvent(self._node_id, name, self._declared)
        data = dict(payload or {})
        json.dumps(data)  # a payload must be JSON data; fail in the task, not in the loop
        index = -1 if self._item_index is None else self._item_index
        self._call(self._emit_sink, self._node_id, self._attempt, index, name, data)

    def log(self, message: str, *, stream: str = "log") -> None:
        text = str(message)
        if self._log_left is not None and not self._admit(text):
            return
        index = -1 if self._item_index is None else self._item_index
        self._call(self._log_sink, self._node_id, self._attempt, index, stream, text)

    def _admit(self, text: str) -> bool:
        # Bytes as stored, plus one for the line's end; ASCII is counted without encoding.
        size = 1 + (len(text) if text.isascii() else len(text.encode("utf-8", "replace")))
        with self._log_lock:
            left = self._log_left
            assert left is not None
            if size <= left and not self._dropped_lines:
                self._log_left = left - size
                return True
            self._dropped_bytes += size
            self._dropped_lines += 1
            return False

    def close(self) -> None:
        """The attempt ended: log how much output the cap dropped, once."""
        if not self._dropped_lines:  # the common case: nothing to say, no lock to take
            self._closed = True
            return
        with self._log_lock:
            if self._closed:
                return
            self._closed = True
            dropped, lines = self._dropped_bytes, self._dropped_lines
        if lines:
            index = -1 if self._item_index is None else self._item_index
            note = (
                f"output truncated: this attempt's log is capped at {self._log_limit} bytes "
                f"(WHENFLOW_TASK_LOG_LIMIT); {dropped} bytes in {lines} lines were dropped"
            )
            self._call(self._log_sink, self._node_id, self._attempt, index, TRUNCATION_STREAM, note)
