"""SIGTERM handled like Ctrl-C (what `timeout`, systemd and Docker send to stop a run).

`asyncio.run` already turns the first SIGINT into a cancellation of the main
task and then raises KeyboardInterrupt. `run_interruptible` does the same for
SIGTERM and raises `Terminated`: in both cases the service stops the running
attempts (their process groups are killed), the store commits what was
appended and releases the lease, and the execution stays resumable.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(Exception):
    """The process received SIGTERM and stopped its work."""


def run_interruptible(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, with SIGTERM cancelling `main` as Ctrl-C does."""

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[int] = []

        def on_sigterm() -> None:
            if not received:  # the first one stops the work; the cleanup is not cut short
                received.append(signal.SIGTERM)
                task.cancel()

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await main
        except asyncio.CancelledError:
            if received:
                raise Terminated from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(guarded())
