"""The noop executor echoes its inputs."""

from __future__ import annotations

from typing import Any

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import TaskRequest
from whenflow.executors.noop import NoopExecutor


class _SilentContext:
    execution_id = "exec-1"
    node_id = "join"
    attempt = 1
    idempotency_key = "exec-1/join"
    item_index = None

    def emit(self, name: str, payload: Any = None) -> None:
        raise AssertionError("noop emits nothing")

    def log(self, message: str, *, stream: str = "log") -> None:
        raise AssertionError("noop logs nothing")


async def test_noop_outputs_are_its_inputs() -> None:
    inputs = {"a": 1, "b": [1, 2], "c": {"d": None}}
    request = TaskRequest(
        execution_id="exec-1",
        node_id="join",
        attempt=1,
        task=TaskSpec(type="noop"),
        inputs=inputs,
        idempotency_key="exec-1/join",
    )
    result = await NoopExecutor().execute(request, _SilentContext())
    assert result.outputs == inputs
    assert NoopExecutor().check(TaskSpec(type="noop")) == []
