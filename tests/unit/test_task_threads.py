"""The thread pool that runs sync python functions (whenflow.executors.task_threads)."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from whenflow.executors.task_threads import TaskThreads

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def current_thread_name() -> str:
    return threading.current_thread().name


async def test_a_call_runs_on_a_pool_thread_and_returns_its_value() -> None:
    pool = TaskThreads(2)
    try:
        name = await pool.call(current_thread_name)
        total = await pool.call(lambda a, b: a + b, a=2, b=3)
    finally:
        pool.close()

    assert name.startswith("whenflow-task_")
    assert name != threading.current_thread().name
    assert total == 5


async def test_an_exception_reaches_the_caller_with_its_type() -> None:
    def boom() -> None:
        raise KeyError("missing")

    pool = TaskThreads(1)
    try:
        with pytest.raises(KeyError, match="missing"):
            await pool.call(boom)
        assert await pool.call(lambda: "still serving") == "still serving"
    finally:
        pool.close()


async def test_the_callers_context_variables_are_visible_in_the_thread() -> None:
    pool = TaskThreads(1)
    request_id.set("r-42")
    try:
        assert await pool.call(request_id.get) == "r-42"
    finally:
        pool.close()


async def test_threads_grow_on_demand_up_to_the_bound() -> None:
    pool = TaskThreads(3)
    release = threading.Event()
    started = threading.Semaphore(0)

    def blocker() -> str:
        started.release()
        release.wait()
        return current_thread_name()

    try:
        assert pool.threads == 0
        calls = [asyncio.ensure_future(pool.call(blocker)) for _ in range(5)]
        for _ in range(3):  # three run at once; the other two wait for a free thread
            await asyncio.to_thread(started.acquire)
        assert pool.threads == 3
        release.set()
        names = await asyncio.gather(*calls)
    finally:
        pool.close()

    assert len(names) == 5
    assert len(set(names)) == 3


async def test_a_cancelled_call_does_not_break_the_pool() -> None:
    pool = TaskThreads(1)
    release = threading.Event()
    try:
        waiting = asyncio.ensure_future(pool.call(release.wait))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()  # the function ends later; its answer finds a cancelled future
        assert await pool.call(lambda: 7) == 7
    finally:
        pool.close()


async def test_a_closed_pool_refuses_new_calls() -> None:
    pool = TaskThreads(1)
    await pool.call(lambda: None)
    pool.close()

    with pytest.raises(RuntimeError, match="closed"):
        await pool.call(lambda: None)


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TaskThreads(0)
