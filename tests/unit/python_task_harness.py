"""One attempt's request for the python executor, for tests that call it directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import TaskRequest

TESTS_DIR = Path(__file__).resolve().parents[1]  # `taskfuncs` lives there


def python_request(
    callable_spec: str, inputs: dict[str, Any] | None = None, **config: Any
) -> TaskRequest:
    """Attempt 1 of node `node` in execution `exec-1`, calling `callable_spec`."""
    return TaskRequest(
        execution_id="exec-1",
        node_id="node",
        attempt=1,
        task=TaskSpec(type="python", config={"callable": callable_spec, **config}),
        inputs=inputs or {},
        idempotency_key="exec-1/node",
    )
