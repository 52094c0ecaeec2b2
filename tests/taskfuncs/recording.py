"""A TaskContext for tests: records emits and logs, thread-safe, awaitable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordingContext:
    execution_id: str = "exec-1"
    node_id: str = "node"
    attempt: int = 1
    idempotency_key: str = "exec-1/node"
    item_index: int | None = None
    emits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    emit_threads: list[int] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _waiters: list[tuple[asyncio.AbstractEventLoop, Callable[[], bool], asyncio.Future[None]]] = (
        field(default_factory=list)
    )

    def emit(self, name: str, payload: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self.emits.append((name, dict(payload or {})))
            self.emit_threads.append(threading.get_ident())
        self._wake()

    def log(self, message: str, *, stream: str = "log") -> None:
        with self._lock:
            self.logs.append((stream, message))
        self._wake()

    def lines(self, stream: str) -> list[str]:
        with self._lock:
            return [message for s, message in self.logs if s == stream]

    def emitted(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for n, payload in self.emits if n == name]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, re-checked after every emit and log (30 s at most)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.append((loop, predicate, future))
        self._wake()
        async with asyncio.timeout(30):
            await future

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, predicate, future in waiters:
            loop.call_soon_threadsafe(self._check, predicate, future)

    def _check(self, predicate: Callable[[], bool], future: asyncio.Future[None]) -> None:
        if not future.done() and predicate():
            future.set_result(None)
            with self._lock:
                self._waiters = [w for w in self._waiters if w[2] is not future]
