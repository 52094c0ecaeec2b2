"""What a task raises is its attempt's outcome, never the engine's (issue 13, items 1 and 4).

A `SystemExit`, `KeyboardInterrupt`, `GeneratorExit` or any `BaseException`
fails the attempt under its own type name, retries apply, and the execution
ends normally. Python's own `TimeoutError` is the task's error, not whenflow's
attempt timeout. A task's exception reaches the user with its type
(`KeyError: 'rows'`) and its traceback goes to the attempt's log.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from types import ModuleType
from typing import Any

import pytest
from engine_harness import run_async
from python_task_harness import python_request

from whenflow.domain.errors import TaskError, TaskRaised, error_message
from whenflow.domain.task_io import TaskRequest
from whenflow.executors.python import PythonExecutor

KINDS = ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException"]


@pytest.fixture
def ctx(unruly: ModuleType) -> Any:
    return importlib.import_module("taskfuncs.recording").RecordingContext()


def request(spec: str, inputs: dict[str, Any] | None = None) -> TaskRequest:
    return python_request(f"taskfuncs.unruly:{spec}", inputs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("function", ["raise_base", "raise_base_async"])
async def test_a_base_exception_becomes_a_task_error_of_its_name(
    executor: PythonExecutor, ctx: Any, kind: str, function: str
) -> None:
    with pytest.raises(TaskRaised) as caught:
        await executor.execute(request(function, {"kind": kind, "message": "why"}), ctx)
    assert type(caught.value).__name__ == kind
    assert isinstance(caught.value, TaskError)
    if kind == "SystemExit":
        assert str(caught.value) == "the task called sys.exit('why'); a task cannot end whenflow"
    else:
        assert str(caught.value) == "why"
    assert ctx.lines("stderr")[-1] == f"{kind}: why"  # the traceback's last line
    assert any(f"in {function}" in line for line in ctx.lines("stderr"))


@pytest.mark.parametrize("function", ["exit_process", "exit_process_async"])
async def test_sys_exit_fails_the_attempt_and_says_what_it_was(
    executor: PythonExecutor, ctx: Any, function: str
) -> None:
    with pytest.raises(TaskRaised) as caught:
        await executor.execute(request(function, {"code": 0}), ctx)
    assert type(caught.value).__name__ == "SystemExit"
    assert "sys.exit(0)" in str(caught.value)
    assert error_message(caught.value).startswith("SystemExit: the task called sys.exit(0)")


async def test_stop_iteration_in_a_thread_fails_the_attempt_instead_of_hanging_it(
    executor: PythonExecutor, ctx: Any
) -> None:
    # asyncio refuses StopIteration on a future: unhandled, the attempt never ended.
    with pytest.raises(TaskRaised) as caught:
        await asyncio.wait_for(executor.execute(request("next_of_empty"), ctx), 10)
    assert type(caught.value).__name__ == "StopIteration"
    assert error_message(caught.value) == "StopIteration: the task raised StopIteration"
    assert ctx.lines("stderr")[-1] == "StopIteration"


async def test_the_traceback_shows_the_task_frames_not_whenflow(
    executor: PythonExecutor, ctx: Any
) -> None:
    with pytest.raises(KeyError):
        await executor.execute(request("lookup_rows"), ctx)
    traceback = "\n".join(ctx.lines("stderr"))
    assert traceback.startswith("Traceback (most recent call last):")
    assert "in lookup_rows" in traceback
    assert "in _rows_of" in traceback
    assert "/whenflow/" not in traceback  # no frame of whenflow's own code
    assert traceback.endswith("KeyError: 'rows'")


# ---------------------------------------------------------------- the engine


def sys_exit() -> dict[str, Any]:
    sys.exit(0)


def interrupt() -> dict[str, Any]:
    raise KeyboardInterrupt("from the task")


async def cancels_itself() -> dict[str, Any]:
    raise asyncio.CancelledError()


def missing_key() -> dict[str, Any]:
    return {"rows": {}["rows"]}


RETRIED = """
nodes:
  - id: bad
    task: {type: python, callable: bad}
    retry: {maxAttempts: 2, delay: 0s}
  - id: after
    startWhen: "event:bad.failed"
    task: {type: noop}
"""


@pytest.mark.parametrize(
    ("function", "error_type"),
    [
        (sys_exit, "SystemExit"),
        (interrupt, "KeyboardInterrupt"),
        (cancels_itself, "CancelledError"),
        (missing_key, "KeyError"),
    ],
)
async def test_whatever_a_task_raises_fails_its_node_after_retries(
    function: Any, error_type: str
) -> None:
    run = await run_async(RETRIED, {"bad": function})
    assert run.node_events("bad") == ["bad.started", "bad.retrying", "bad.started", "bad.failed"]
    assert run.status("bad") == "failed"
    assert run.status("after") == "completed"
    assert run.result.status.value == "failed"
    (failed,) = run.payloads("bad.failed")
    assert failed["error_type"] == error_type
    assert failed["message"].startswith(f"{error_type}: ")
    assert run.events[-1] == "pipeline.failed"


async def test_a_key_error_reaches_the_user_with_its_type() -> None:
    run = await run_async(RETRIED, {"bad": missing_key})
    assert run.result.nodes["bad"].error == "KeyError: 'rows'"


# ---------------------------------------------------------------- TimeoutError


def python_timeout() -> dict[str, Any]:
    raise TimeoutError("the server did not answer")


async def slow() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {}


def flaky_timeout_factory() -> Any:
    calls: list[int] = []

    def flaky() -> dict[str, Any]:
        calls.append(1)
        if len(calls) < 2:
            raise TimeoutError("the server did not answer")
        return {"calls": len(calls)}

    return flaky


async def test_python_timeout_error_is_the_tasks_error_not_a_whenflow_timeout() -> None:
    run = await run_async(
        """
        nodes:
          - id: call
            task: {type: python, callable: call}
            timeout: 30s
        """,
        {"call": python_timeout},
    )
    (failed,) = run.payloads("call.failed")
    assert failed["error_type"] == "TimeoutError"
    assert failed["message"] == "TimeoutError: the server did not answer"
    assert "timed out after" not in failed["message"]


async def test_retry_on_timeout_error_retries_a_python_timeout_error() -> None:
    spec = """
    nodes:
      - id: call
        task: {type: python, callable: call}
        retry: {maxAttempts: 3, delay: 0s, retryOn: [TimeoutError]}
    """
    run = await run_async(spec, {"call": flaky_timeout_factory()})
    assert run.node_events("call") == [
        "call.started",
        "call.retrying",
        "call.started",
        "call.completed",
    ]
    assert run.result.nodes["call"].outputs == {"calls": 2}


@pytest.mark.parametrize(("retry_on", "attempts"), [("TaskTimeout", 2), ("TimeoutError", 1)])
async def test_the_attempt_timeout_keeps_its_own_type(retry_on: str, attempts: int) -> None:
    spec = f"""
    nodes:
      - id: call
        task: {{type: python, callable: call}}
        timeout: 10ms
        retry: {{maxAttempts: 2, delay: 0s, retryOn: [{retry_on}]}}
    """
    run = await run_async(spec, {"call": slow})
    failed = run.payloads("call.failed")[0]
    assert failed["error_type"] == "TaskTimeout"
    assert failed["message"] == "node 'call' timed out after 0.01s"
    assert run.result.nodes["call"].attempts == attempts


def test_whenflow_errors_keep_their_own_words() -> None:
    from whenflow.domain.errors import TaskTimeout

    assert error_message(TaskTimeout("n", 2)) == "node 'n' timed out after 2s"
    assert error_message(ValueError("bad")) == "ValueError: bad"
    assert error_message(ValueError()) == "ValueError"


# ------------------------------------------- what a task raises or returns, of other kinds


@pytest.mark.parametrize("function", ["raise_unreadable", "raise_unreadable_base"])
async def test_an_exception_whose_str_fails_fails_the_attempt(
    executor: PythonExecutor, ctx: Any, unruly: ModuleType, function: str
) -> None:
    # Its __str__ raising killed the pool's worker thread: the attempt waited forever.
    with pytest.raises((TaskRaised, unruly._Unreadable)) as caught:
        await asyncio.wait_for(executor.execute(request(function), ctx), 10)
    assert type(caught.value).__name__ in ("_Unreadable", "_UnreadableBase")
    assert "could not be read" in error_message(caught.value)


ISOLATED = """
nodes:
  - id: bad
    task: {type: python, callable: bad}
  - id: other
    task: {type: python, callable: other}
  - id: after
    startWhen: "event:bad.failed"
    task: {type: noop}
"""


def other_task() -> dict[str, Any]:
    return {"ok": True}


@pytest.mark.parametrize("function", ["raise_unreadable", "raise_unreadable_base", "deep_output"])
async def test_what_a_task_raises_or_returns_never_ends_the_execution(
    unruly: ModuleType, function: str
) -> None:
    # These ended the whole execution as an "internal error", cancelling the others.
    run = await run_async(ISOLATED, {"bad": getattr(unruly, function), "other": other_task})
    assert run.node_events("bad") == ["bad.started", "bad.failed"]
    assert run.status("other") == "completed"
    assert run.status("after") == "completed"
    assert "internal error" not in (run.result.error or "")
    (failed,) = run.payloads("bad.failed")
    if function == "deep_output":
        assert failed["error_type"] == "OutputError"
        assert "not JSON data" in failed["message"]
    else:
        assert "could not be read" in failed["message"]
    assert run.events[-1] == "pipeline.failed"


async def test_an_async_task_that_swallows_its_cancellation_cannot_hold_its_attempt(
    executor: PythonExecutor, ctx: Any
) -> None:
    # Awaited directly, it kept its attempt (a timeout, a cancel, Ctrl-C's halt) waiting.
    attempt = asyncio.ensure_future(
        asyncio.wait_for(executor.execute(request("swallow_cancellation"), ctx), 0.05)
    )
    done, _ = await asyncio.wait({attempt}, timeout=10)
    assert done, "the attempt outlived its timeout"
    with pytest.raises(TimeoutError):
        attempt.result()


def huge_message() -> dict[str, Any]:
    raise ValueError("x" * 5_000_000)


async def test_a_huge_exception_message_is_cut_where_it_is_recorded() -> None:
    # Stored whole in the attempt row, the node row and the failure event (and
    # on each retry): 5 MB per copy, as uncapped task logs once grew the database.
    run = await run_async(RETRIED, {"bad": huge_message})
    (failed,) = run.payloads("bad.failed")
    assert failed["message"].startswith("ValueError: xxx")
    assert failed["message"].endswith("more characters not kept)")
    assert len(failed["message"]) < 20_000
    assert len(run.result.nodes["bad"].error or "") < 20_000
    assert len(repr(run.store.records)) < 200_000
