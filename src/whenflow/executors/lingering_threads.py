"""Attempts whose thread outlived them: a retry waits for that thread to end.

A sync python function runs on a thread, and a thread cannot be stopped: when
its attempt times out (or is stopped), the attempt ends at once but the
function runs on. Without care, the retry would run the same function a
second time *while the first is still running*, against the same outside
system and with the same idempotency key. So the executor remembers such a
thread per idempotency key (`<execution>/<node>[/<index>]`, the same for every
attempt), and the next attempt of that key waits for it to end before it
calls the function, saying so in its log (issue 17, item 4). Use
`isolation: process` to have a timed-out attempt killed instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any


class ThreadCall:
    """Runs a function on a pool thread and can tell the loop when it has returned.

    `finished()` is only asked for when the attempt was abandoned, so a call
    that ends normally costs one flag write and no loop wake-up. The flag and
    the waiter are written in opposite orders by the thread and the loop, so at
    least one of them sees the other (the GIL orders the writes).
    """

    __slots__ = ("_done", "_fn", "_loop", "_waiter")

    def __init__(self, fn: Callable[..., Any], loop: asyncio.AbstractEventLoop) -> None:
        self._fn = fn
        self._loop = loop
        self._done = False
        self._waiter: asyncio.Future[None] | None = None

    def run(self, **arguments: Any) -> Any:
        """The function's call, on the thread."""
        try:
            return self._fn(**arguments)
        finally:
            self._done = True
            waiter = self._waiter
            if waiter is not None:
                # A closed loop raises RuntimeError: nobody waits any more.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(_settle, waiter)

    def finished(self) -> asyncio.Future[None]:
        """A future done once the function has returned (on the loop's thread)."""
        waiter = self._loop.create_future()
        self._waiter = waiter
        if self._done:
            _settle(waiter)
        return waiter


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LingeringThreads:
    """The threads of abandoned attempts, by idempotency key, until they end."""

    def __init__(self) -> None:
        self._threads: dict[str, tuple[int, asyncio.Future[None]]] = {}

    def abandoned(self, key: str, attempt: int, call: ThreadCall) -> None:
        """Attempt `attempt` of `key` ended while its thread still runs `call`."""
        finished = call.finished()
        if finished.done():
            return
        entry = (attempt, finished)
        self._threads[key] = entry

        def forget(_: asyncio.Future[None]) -> None:
            if self._threads.get(key) is entry:
                del self._threads[key]

        finished.add_done_callback(forget)

    async def wait(self, key: str, attempt: int, log: Callable[[str], None]) -> None:
        """Before attempt `attempt` of `key` starts: wait for a previous one's thread."""
        entry = self._threads.get(key)
        if entry is None or entry[1].done():
            return
        previous, finished = entry
        log(
            f"waiting for the thread of attempt {previous} to end before attempt {attempt} "
            "starts: a thread cannot be stopped, and two attempts of a node never overlap "
            "(isolation: process kills a timed-out attempt instead)"
        )
        await asyncio.shield(finished)
