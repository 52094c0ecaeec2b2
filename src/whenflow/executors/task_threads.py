"""The threads that run sync `python` functions, with a short hand-off to the loop.

`loop.run_in_executor` goes through a `concurrent.futures.Future`, its condition
lock, a done-callback chain and a second asyncio future. A chain of trivial
sync tasks pays that on every node, and it measured ~40% of the hand-off
(0.14 ms against 0.09 ms per call on a 2-core VM). Here a call is one queue put
that returns the future to await (no coroutine around it); the worker answers
with one `call_soon_threadsafe` that settles that future directly, and marks
itself idle first, so that it releases the GIL as soon as the loop is told.

Threads start on demand up to `max_threads` and are daemons: a function that
outlives its cancelled attempt (a thread cannot be killed) does not hold the
process open at exit, as `ThreadPoolExecutor`'s joined workers would.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[
    contextvars.Context,
    Callable[..., Any],
    dict[str, Any],
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
]
_STOP = None


class RaisedInThread(Exception):
    """Carries a `BaseException` that is not an `Exception` (SystemExit, KeyboardInterrupt...).

    Such an exception set on an asyncio future would end the event loop (or,
    for GeneratorExit, be replaced by the coroutine machinery), so the
    awaiting side gets this carrier and decides what the original means.
    """

    def __init__(self, error: BaseException) -> None:
        # Not `str(error)`: a failing `__str__` here would kill the worker thread
        # and leave the attempt waiting forever.
        super().__init__(type(error).__name__)
        self.error = error


def default_max_threads() -> int:
    """The same bound as `ThreadPoolExecutor`: enough for I/O, not a thread per task."""
    return min(32, (os.cpu_count() or 1) + 4)


class TaskThreads:
    """A lazily grown pool of daemon threads that settle asyncio futures directly."""

    def __init__(self, max_threads: int | None = None, *, name: str = "whenflow-task") -> None:
        if max_threads is not None and max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self._max = max_threads or default_max_threads()
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Threads started so far."""
        return self._threads

    def call(self, fn: Callable[..., T], /, **kwargs: Any) -> asyncio.Future[T]:
        """Start `fn(**kwargs)` on a pool thread, in a copy of the caller's context.

        Await the returned future for its value or exception; cancelling it
        abandons the call (the function still runs to its end).
        """
        return self.submit(fn, kwargs)

    def submit(self, fn: Callable[..., T], kwargs: dict[str, Any]) -> asyncio.Future[T]:
        """`call` with the keyword arguments as a dict, which the pool then owns."""
        if self._closed:
            raise RuntimeError("the task thread pool is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._grow_if_busy()
        self._jobs.put((contextvars.copy_context(), fn, kwargs, loop, future))
        return future

    def close(self) -> None:
        """Let every thread end once the calls already running return."""
        with self._lock:
            self._closed = True
            threads = self._threads
        for _ in range(threads):
            self._jobs.put(_STOP)

    def _grow_if_busy(self) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # this call takes one idle thread
                return
            if self._threads >= self._max:
                return
            self._threads += 1
            number = self._threads
        thread = threading.Thread(target=self._work, name=f"{self._name}_{number - 1}", daemon=True)
        thread.start()

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            context, fn, kwargs, loop, future = job
            del job
            settle: Callable[[asyncio.Future[Any], Any], None]
            try:
                outcome = context.run(fn, **kwargs)
            except StopIteration as exc:  # a future refuses it: the attempt would hang
                settle, outcome = _settle_error, RaisedInThread(exc)
            except Exception as exc:  # delivered to the awaiting attempt
                settle, outcome = _settle_error, exc
            except BaseException as exc:
                settle, outcome = _settle_error, RaisedInThread(exc)
            else:
                settle = _settle_value
            # Idle before answering: the loop wakes on the answer and wants the
            # GIL, which this thread then gives up at once in `jobs.get()`.
            with self._lock:
                self._idle += 1
            self._answer(loop, settle, future, outcome)
            del context, fn, kwargs, future, outcome

    @staticmethod
    def _answer(loop: asyncio.AbstractEventLoop, settle: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(settle, *args)


def _settle_value(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # the attempt may have been cancelled or timed out
        future.set_result(value)


def _settle_error(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
