"""`isolation: process`: a real child Python, JSON only across the boundary."""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.errors import TaskError
from whenflow.domain.task_io import TaskRequest
from whenflow.executors.errors import ChildProcessDied, IsolatedTaskError
from whenflow.executors.python import PythonExecutor

TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def funcs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    return importlib.import_module("taskfuncs")


@pytest.fixture
def ctx(funcs: ModuleType) -> Any:
    return importlib.import_module("taskfuncs.recording").RecordingContext()


@pytest.fixture
def executor() -> Iterator[PythonExecutor]:
    python = PythonExecutor(terminate_grace_s=5)
    yield python
    python.close()


def isolated(
    callable_spec: str, inputs: dict[str, Any] | None = None, **fields: Any
) -> TaskRequest:
    return TaskRequest(
        execution_id="exec-1",
        node_id="node",
        attempt=2,
        task=TaskSpec(type="python", config={"callable": callable_spec, "isolation": "process"}),
        inputs=inputs or {},
        idempotency_key="exec-1/node",
        **fields,
    )


async def test_result_comes_back_from_the_child(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(isolated("taskfuncs:add", {"a": 40, "b": 2}), ctx)
    assert result.outputs == {"sum": 42}


async def test_async_functions_and_task_results_work_in_the_child(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(isolated("taskfuncs:async_ident"), ctx)
    assert set(result.outputs) == {"thread"}
    result = await executor.execute(isolated("taskfuncs:doubled", {"x": 21}), ctx)
    assert result.outputs == {"result": 42}


async def test_emits_and_logs_are_forwarded_with_the_context(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(isolated("taskfuncs:with_ctx", {"n": 7}), ctx)
    assert result.outputs["node"] == "node"
    assert result.outputs["key"] == "exec-1/node"
    assert result.outputs["attempt"] == 2
    assert ctx.emits == [("progress", {"n": 7})]
    assert ("log", "working on 7") in ctx.logs
    result = await executor.execute(isolated("taskfuncs:item_index", item_index=4), ctx)
    assert result.outputs == {"index": 4, "execution": "exec-1"}


async def test_stdout_and_stderr_reach_the_log(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    result = await executor.execute(isolated("taskfuncs:chatty"), ctx)
    assert result.outputs == {"ok": True}
    assert ctx.lines("stdout") == ["to stdout"]
    assert ctx.lines("stderr") == ["to stderr"]


async def test_exceptions_keep_their_type_name_and_message(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(IsolatedTaskError, match=r"^bad input$") as caught:
        await executor.execute(
            isolated("taskfuncs:raises_value_error", {"message": "bad input"}), ctx
        )
    assert type(caught.value).__name__ == "ValueError"
    assert isinstance(caught.value, TaskError)
    assert "raise ValueError(message)" in caught.value.child_traceback

    with pytest.raises(IsolatedTaskError, match="custom boom") as custom:
        await executor.execute(isolated("taskfuncs:raises_custom"), ctx)
    assert type(custom.value).__name__ == "CustomError"
    assert custom.value.child_module == "taskfuncs"


async def test_a_non_json_output_fails_in_the_child(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(IsolatedTaskError, match="cannot leave the isolated process") as caught:
        await executor.execute(isolated("taskfuncs:returns_object"), ctx)
    assert type(caught.value).__name__ == "TaskOutputError"


async def test_paths_round_trip_as_paths(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType, tmp_path: Path
) -> None:
    made = await executor.execute(
        isolated("taskfuncs:make_files", {"directory": str(tmp_path)}), ctx
    )
    assert made.outputs == {
        "file": tmp_path / "out.txt",
        "files": [tmp_path / "out.txt"],
        "count": 1,
    }
    assert isinstance(made.outputs["file"], Path)
    read = await executor.execute(
        isolated("taskfuncs:read_file", {"file": made.outputs["file"]}), ctx
    )
    assert read.outputs == {"is_path": True, "text": "hello"}


async def test_relative_paths_resolve_against_the_workdir(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType, tmp_path: Path
) -> None:
    made = await executor.execute(
        isolated("taskfuncs:make_files", {"directory": "."}, workdir=str(tmp_path)), ctx
    )
    assert made.outputs["file"] == tmp_path / "out.txt"


async def test_a_child_that_dies_without_answering_fails_the_attempt(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(ChildProcessDied, match="exited with code 3") as caught:
        await executor.execute(isolated("taskfuncs:exit_hard"), ctx)
    assert caught.value.stderr_tail == ("about to die",)


async def test_an_unimportable_callable_fails_in_the_child(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(IsolatedTaskError, match="has no attribute 'missing'") as caught:
        await executor.execute(isolated("taskfuncs:missing"), ctx)
    assert type(caught.value).__name__ == "CallableNotFound"


async def test_cancellation_kills_the_child(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    attempt = asyncio.create_task(executor.execute(isolated("taskfuncs:block_forever"), ctx))
    await ctx.wait_until(lambda: ctx.emitted("started"))
    pid = ctx.emitted("started")[0]["pid"]
    os.kill(pid, 0)  # alive while blocked
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("SystemExit", "the task called sys.exit('why'); a task cannot end whenflow"),
        ("KeyboardInterrupt", "why"),
        ("BaseException", "why"),
    ],
)
async def test_a_base_exception_in_the_child_fails_the_attempt_under_its_name(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType, kind: str, message: str
) -> None:
    with pytest.raises(IsolatedTaskError) as caught:
        await executor.execute(
            isolated("taskfuncs.unruly:raise_base", {"kind": kind, "message": "why"}), ctx
        )
    assert type(caught.value).__name__ == kind
    assert str(caught.value) == message


async def test_sys_exit_0_in_the_child_is_a_failed_attempt(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(IsolatedTaskError, match=r"sys\.exit\(0\)") as caught:
        await executor.execute(isolated("taskfuncs.unruly:exit_process", {"code": 0}), ctx)
    assert type(caught.value).__name__ == "SystemExit"


async def test_os_exit_0_in_the_child_is_a_failed_attempt(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(ChildProcessDied, match="exited with code 0"):
        await executor.execute(isolated("taskfuncs.unruly:hard_exit"), ctx)


async def test_the_childs_traceback_reaches_the_log_with_the_task_frames_only(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(IsolatedTaskError) as caught:
        await executor.execute(isolated("taskfuncs.unruly:lookup_rows"), ctx)
    assert type(caught.value).__name__ == "KeyError"
    assert str(caught.value) == "'rows'"
    traceback = ctx.lines("stderr")
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "KeyError: 'rows'"
    assert any("in _rows_of" in line for line in traceback)
    assert not any("python_child.py" in line or "callables.py" in line for line in traceback)


async def test_python_timeout_error_in_the_child_keeps_its_type(
    executor: PythonExecutor, ctx: Any, funcs: ModuleType
) -> None:
    with pytest.raises(IsolatedTaskError, match="did not answer") as caught:
        await executor.execute(isolated("taskfuncs.unruly:python_timeout"), ctx)
    assert type(caught.value).__name__ == "TimeoutError"
