"""The executor registry and the local backend that looks executors up in it."""

from __future__ import annotations

from typing import Any

import pytest

from whenflow.backends.local import LocalRunner
from whenflow.domain.definitions import TaskSpec
from whenflow.domain.errors import WhenflowError
from whenflow.domain.task_io import TaskContext, TaskRequest, TaskResult
from whenflow.executors.errors import DuplicateExecutor, UnknownTaskType
from whenflow.executors.noop import NoopExecutor
from whenflow.executors.registry import ExecutorRegistry, default_registry


class _Closable:
    task_type = "closable"

    def __init__(self) -> None:
        self.closed = False

    def check(self, task: TaskSpec) -> list[str]:
        return ["always wrong"]

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        return TaskResult(outputs={"ran": True})

    def close(self) -> None:
        self.closed = True


def _request(task_type: str, inputs: dict[str, Any]) -> TaskRequest:
    return TaskRequest(
        execution_id="e",
        node_id="n",
        attempt=1,
        task=TaskSpec(type=task_type),
        inputs=inputs,
        idempotency_key="e/n",
    )


def test_default_registry_has_the_builtin_types() -> None:
    assert default_registry().types == ("http", "llm", "noop", "python", "shell", "spark", "sql")


def test_unknown_type_names_the_known_ones() -> None:
    registry = ExecutorRegistry([NoopExecutor()])
    with pytest.raises(UnknownTaskType) as caught:
        registry.get("spark")
    assert isinstance(caught.value, WhenflowError)
    assert caught.value.task_type == "spark"
    assert "unknown task type 'spark'; known types: noop" in str(caught.value)


def test_duplicates_need_replace() -> None:
    registry = ExecutorRegistry([NoopExecutor()])
    with pytest.raises(DuplicateExecutor, match="replace=True"):
        registry.register(NoopExecutor())
    replacement = NoopExecutor()
    registry.register(replacement, replace=True)
    assert registry.get("noop") is replacement
    assert "noop" in registry


async def test_local_runner_delegates_to_the_executor() -> None:
    closable = _Closable()
    runner = LocalRunner(ExecutorRegistry([NoopExecutor(), closable]))
    assert runner.knows("noop")
    assert not runner.knows("spark")
    assert runner.check(TaskSpec(type="closable")) == ["always wrong"]
    assert runner.check(TaskSpec(type="spark")) == [
        "unknown task type 'spark'; known types: closable, noop"
    ]
    result = await runner.run(_request("noop", {"x": 1}), _NoContext())
    assert result.outputs == {"x": 1}
    with pytest.raises(UnknownTaskType):
        await runner.run(_request("spark", {}), _NoContext())
    runner.close()
    assert closable.closed


class _NoContext:
    execution_id = "e"
    node_id = "n"
    attempt = 1
    idempotency_key = "e/n"
    item_index = None

    def emit(self, name: str, payload: Any = None) -> None:
        pass

    def log(self, message: str, *, stream: str = "log") -> None:
        pass


def test_the_dsl_renders_the_fields_the_http_and_llm_executors_declare() -> None:
    from whenflow.dsl.program import RENDERED_CONFIG_FIELDS
    from whenflow.executors import http_config, llm_config

    assert RENDERED_CONFIG_FIELDS["http"] == http_config.RENDERED_FIELDS
    assert RENDERED_CONFIG_FIELDS["llm"] == llm_config.RENDERED_FIELDS
