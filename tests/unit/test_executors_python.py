"""The python executor in-process: threads for sync functions, the loop for async ones."""

from __future__ import annotations

import asyncio
import importlib
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from python_task_harness import TESTS_DIR, python_request

from whenflow.domain.definitions import TaskSpec
from whenflow.executors.errors import CallableNotFound, InvalidTaskConfig, TaskOutputError
from whenflow.executors.python import PythonExecutor, resolve_callable, signature_of


@pytest.fixture
def funcs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    return importlib.import_module("taskfuncs")


@pytest.fixture
def ctx(funcs: ModuleType) -> Any:
    return importlib.import_module("taskfuncs.recording").RecordingContext()


request = python_request


async def test_sync_function_runs_off_the_loop_thread(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(request("taskfuncs:thread_ident"), ctx)
    assert result.outputs["thread"] != threading.get_ident()


async def test_async_function_runs_on_the_loop(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(request("taskfuncs:async_ident"), ctx)
    assert result.outputs["thread"] == threading.get_ident()


async def test_inputs_are_keyword_arguments_and_defaults_apply(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(request("taskfuncs:add", {"a": 2}), ctx)
    assert result.outputs == {"sum": 3}
    result = await executor.execute(request("taskfuncs:add", {"a": 2, "b": 5}), ctx)
    assert result.outputs == {"sum": 7}


async def test_ctx_is_injected_and_emits_from_the_worker_thread(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(request("taskfuncs:with_ctx", {"n": 3}), ctx)
    assert result.outputs == {
        "node": "node",
        "key": "exec-1/node",
        "attempt": 1,
        "thread": result.outputs["thread"],
    }
    assert ctx.emits == [("progress", {"n": 3})]
    assert ctx.emit_threads == [result.outputs["thread"]]
    assert ctx.emit_threads[0] != threading.get_ident()
    assert ctx.logs == [("log", "working on 3")]


async def test_a_plain_function_returning_a_non_dict_fails_with_advice(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(TaskOutputError, match=r"taskfuncs:plain_int.*returned int") as caught:
        await executor.execute(request("taskfuncs:plain_int"), ctx)
    assert "@whenflow.task" in str(caught.value)


async def test_a_task_declared_value_becomes_output_result(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(request("taskfuncs:doubled", {"x": 4}), ctx)
    assert result.outputs == {"result": 8}


async def test_a_typed_dict_task_returns_its_fields(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(request("taskfuncs:stats", {"values": [1.0, 3.0]}), ctx)
    assert result.outputs == {"count": 2, "mean": 2.0}


async def test_none_means_no_outputs(executor: PythonExecutor, ctx: Any, funcs: ModuleType) -> None:
    result = await executor.execute(request("taskfuncs:returns_none"), ctx)
    assert result.outputs == {}


async def test_exceptions_propagate_with_their_type_and_message(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(ValueError, match=r"^bad input$"):
        await executor.execute(
            request("taskfuncs:raises_value_error", {"message": "bad input"}), ctx
        )
    with pytest.raises(funcs.CustomError, match="custom boom"):
        await executor.execute(request("taskfuncs:raises_custom"), ctx)


async def test_paths_in_outputs_stay_paths(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType, tmp_path: Path
) -> None:
    result = await executor.execute(
        request("taskfuncs:make_files", {"directory": str(tmp_path)}), ctx
    )
    assert result.outputs["file"] == tmp_path / "out.txt"
    assert isinstance(result.outputs["file"], Path)


async def test_binding_mismatches_name_the_parameter(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(InvalidTaskConfig, match=r"has no parameter 'c'"):
        await executor.execute(request("taskfuncs:add", {"a": 1, "c": 2}), ctx)
    with pytest.raises(InvalidTaskConfig, match=r"needs input 'a'"):
        await executor.execute(request("taskfuncs:add", {"b": 1}), ctx)


async def test_cancellation_ends_the_attempt_while_the_thread_runs_on(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    funcs.release_blocked_thread.clear()
    attempt = asyncio.create_task(executor.execute(request("taskfuncs:block_in_thread"), ctx))
    await ctx.wait_until(lambda: ctx.emitted("started"))
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    funcs.release_blocked_thread.set()  # let the worker thread finish


async def test_config_errors_fail_the_attempt(executor: PythonExecutor, ctx: Any) -> None:
    with pytest.raises(CallableNotFound, match=r"package\.module:function"):
        await executor.execute(request("taskfuncs.add"), ctx)
    with pytest.raises(InvalidTaskConfig, match="isolation 'fork'"):
        await executor.execute(request("taskfuncs:add", isolation="fork"), ctx)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"callable": "taskfuncs:add"}, None),
        ({"callable": "taskfuncs:add", "isolation": "process"}, None),
        ({}, "`callable` is missing"),
        ({"callable": "taskfuncs.add"}, "write it as 'package.module:function'"),
        ({"callable": "taskfuncs:"}, "is not a Python name"),
        ({"callable": "no_such_module_xyz:f"}, "no module named 'no_such_module_xyz'"),
        ({"callable": "taskfuncs:missing"}, "module 'taskfuncs' has no attribute 'missing'"),
        ({"callable": "taskfuncs:NOT_CALLABLE"}, "'NOT_CALLABLE' is a int, not something callable"),
        ({"callable": "taskfuncs.broken:f"}, "RuntimeError: broken on import"),
        ({"callable": "taskfuncs:add", "isolation": "fork"}, "isolation 'fork' is not one of"),
        ({"callable": "taskfuncs:add", "calable": "x"}, "unknown field 'calable'"),
        ({"callable": 3}, "must be a string"),
    ],
)
def test_check_reports_config_problems(
    funcs: ModuleType, config: dict[str, Any], expected: str | None
) -> None:
    problems = PythonExecutor().check(TaskSpec(type="python", config=config))
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert expected in problems[0]
        assert problems[0].startswith("python task")


def test_resolve_callable_and_signature_of(funcs: ModuleType) -> None:
    assert resolve_callable("taskfuncs:add") is funcs.add
    assert resolve_callable("taskfuncs:add") is resolve_callable("taskfuncs:add")
    assert signature_of(funcs.add) is None
    signature = signature_of(funcs.doubled)
    assert signature is not None
    assert set(signature.inputs) == {"x"}
    assert set(signature.outputs) == {"result"}
    with pytest.raises(CallableNotFound, match="taskfuncs:missing"):
        resolve_callable("taskfuncs:missing")
