"""What an in-process python task prints goes to its attempt's log (issue 13, item 2)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from types import ModuleType
from typing import Any

import pytest
from python_task_harness import python_request

from whenflow.domain.task_io import TaskRequest
from whenflow.engine.attempt_context import TRUNCATION_STREAM, AttemptContext
from whenflow.executors import task_output
from whenflow.executors.python import PythonExecutor
from whenflow.executors.subprocess_io import MAX_LOG_LINE


def recording() -> Any:
    return importlib.import_module("taskfuncs.recording").RecordingContext()


def request(spec: str, inputs: dict[str, Any] | None = None) -> TaskRequest:
    return python_request(f"taskfuncs.unruly:{spec}", inputs)


@pytest.mark.parametrize("function", ["chatty", "echo"])
async def test_prints_writes_and_logging_of_a_thread_task_reach_its_log(
    executor: PythonExecutor, unruly: ModuleType, capsys: pytest.CaptureFixture[str], function: str
) -> None:
    ctx = recording()
    inputs = {"text": "hi"} if function == "chatty" else {"value": "hi"}
    await executor.execute(request(function, inputs), ctx)
    captured = capsys.readouterr()
    assert "hi" not in captured.out
    assert "hi" not in captured.err
    if function == "chatty":
        assert ctx.lines("stdout") == ["hi", "written: hi"]
        assert ctx.lines("stderr") == ["to stderr: hi", "INFO logged: hi"]
    else:
        assert ctx.lines("stdout") == ["print: hi"]
        assert ctx.lines("stderr")[0] == "stderr: hi"
        assert ctx.lines("log") == ["ctx.log: hi"]


async def test_an_async_task_on_the_loop_is_captured_too(
    executor: PythonExecutor, unruly: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = logging.StreamHandler(sys.stderr)  # bound to the real stream before any run
    logger = logging.getLogger("unruly.async")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        ctx = recording()
        await executor.execute(request("chatty_async", {"text": "yo"}), ctx)
        logger.warning("outside any attempt")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert ctx.lines("stdout") == ["async yo"]
    assert any("async logged: yo" in line for line in ctx.lines("stderr"))
    assert "outside any attempt" in capsys.readouterr().err


async def test_two_attempts_printing_at_once_keep_their_own_lines(
    executor: PythonExecutor, unruly: ModuleType
) -> None:
    first, second = recording(), recording()
    await asyncio.gather(
        executor.execute(request("print_tagged", {"tag": "a", "times": 200}), first),
        executor.execute(request("print_tagged", {"tag": "b", "times": 200}), second),
    )
    assert first.lines("stdout") == [f"a {i}" for i in range(200)] + ["a unfinished"]
    assert second.lines("stdout") == [f"b {i}" for i in range(200)] + ["b unfinished"]


async def test_writes_outside_attempts_go_to_the_real_streams(
    executor: PythonExecutor, unruly: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    await executor.execute(request("chatty"), recording())
    print("the engine's own line")
    assert capsys.readouterr().out == "the engine's own line\n"


def test_the_real_streams_come_back_when_the_last_executor_closes() -> None:
    real_out, real_err = sys.stdout, sys.stderr
    task_output.install()
    task_output.install()
    assert isinstance(sys.stdout, task_output.StreamProxy)
    task_output.uninstall()
    assert isinstance(sys.stdout, task_output.StreamProxy)
    task_output.uninstall()
    assert sys.stdout is real_out
    assert sys.stderr is real_err


def test_long_lines_are_split_as_shell_output_is() -> None:
    ctx = recording()
    output = task_output.AttemptOutput(ctx)
    output.write("stdout", "x" * (MAX_LOG_LINE * 2 + 5) + "\r\ntail")
    output.close()
    assert ctx.lines("stdout") == ["x" * MAX_LOG_LINE, "x" * MAX_LOG_LINE, "xxxxx", "tail"]


# ------------------------------------------------------------------ the cap


def capped(limit: int | None) -> tuple[AttemptContext, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    ctx = AttemptContext(
        loop=asyncio.get_running_loop(),  # on its thread: lines are logged at once
        execution_id="e",
        node_id="n",
        attempt=1,
        item_index=None,
        idempotency_key="e/n",
        emit_sink=lambda *args: None,
        log_sink=lambda node, attempt, item, stream, message: lines.append((stream, message)),
        log_limit=limit,
    )
    return ctx, lines


async def test_an_attempt_logs_up_to_its_cap_then_says_how_much_it_dropped() -> None:
    ctx, lines = capped(100)
    for i in range(30):
        ctx.log(f"line {i:04d}", stream="stdout")  # 9 bytes + the line end
    ctx.close()
    ctx.close()
    kept = [message for stream, message in lines if stream == "stdout"]
    assert kept == [f"line {i:04d}" for i in range(10)]
    (note,) = [message for stream, message in lines if stream == TRUNCATION_STREAM]
    assert note == (
        "output truncated: this attempt's log is capped at 100 bytes "
        "(WHENFLOW_TASK_LOG_LIMIT); 200 bytes in 20 lines were dropped"
    )


async def test_once_a_line_is_dropped_later_short_lines_are_dropped_too() -> None:
    ctx, lines = capped(20)
    ctx.log("é" * 8)  # 16 bytes in UTF-8 (+1): kept
    ctx.log("x" * 10)  # would pass the cap: dropped
    ctx.log("y")  # fits, but the log must not have holes
    ctx.close()
    assert [m for _, m in lines][:-1] == ["é" * 8]
    assert "in 2 lines were dropped" in lines[-1][1]


async def test_no_cap_and_no_truncation_line_when_within_it() -> None:
    ctx, lines = capped(None)
    for _ in range(1000):
        ctx.log("x" * 100)
    ctx.close()
    assert len(lines) == 1000
