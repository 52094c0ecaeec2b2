"""`whenflow.run()` from Python, against the embedded SQLite store in a private home."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import whenflow
from whenflow.api_run import compile_definition
from whenflow.domain.definitions import NodeDefinition, ParamSpec, PipelineDefinition, TaskSpec
from whenflow.domain.records import MessageKind
from whenflow.engine.orchestrator import Orchestrator
from whenflow.services.executions import ExecutionService
from whenflow.services.pipelines import load_stored_program
from whenflow.testing import InlineRunner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BUILT = PipelineDefinition(
    name="from_python",
    version="1.0.0",
    inputs={"x": ParamSpec("integer", required=True)},
    nodes=(
        NodeDefinition(
            id="double", task=TaskSpec("noop"), input_bindings={"v": "{{ pipeline.input.x * 2 }}"}
        ),
        NodeDefinition(
            id="review",
            task=TaskSpec("approval", {"message": "double is {{ double.v }}; go on?"}),
            start_when="event:double.completed",
        ),
        NodeDefinition(
            id="echo",
            task=TaskSpec("noop"),
            start_when="event:review.approved && event:double.completed",
            input_bindings={"v": "{{ double.v + 1 }}"},
        ),
    ),
    outputs={"answer": "{{ echo.v }}"},
)


def test_run_a_file_returns_what_run_json_prints(tmp_home: Path) -> None:
    result = whenflow.run(EXAMPLES / "branch_and_join.yaml", inputs={"amount": "5000"})
    assert set(result) == {
        "executionId",
        "retryOf",
        "pipeline",
        "version",
        "status",
        "outputs",
        "nodes",
        "events",
        "error",
    }
    assert (result["pipeline"], result["version"], result["status"]) == (
        "branch_and_join",
        "1.0.0",
        "completed",
    )
    assert result["outputs"] == {"decision": "reviewed"}
    assert result["nodes"]["auto_approve"] == {
        "status": "skipped",
        "attempts": 0,
        "outputs": {},
        "error": None,
    }
    assert result["events"][0] == "pipeline.started"
    assert result["events"][-1] == "pipeline.completed"


def test_a_python_built_definition_is_stored_as_text_that_compiles(tmp_home: Path) -> None:
    definition = replace(BUILT, nodes=(BUILT.nodes[0],), outputs={"v": "{{ double.v }}"})
    result = whenflow.run(definition, {"x": "20"})
    assert result["outputs"] == {"v": 40}
    conn = sqlite3.connect(tmp_home / "whenflow.db")
    try:
        (text,) = conn.execute(
            "SELECT definition_text FROM executions WHERE id = ?", (result["executionId"],)
        ).fetchone()
    finally:
        conn.close()
    stored = load_stored_program(text, None).definition
    assert replace(stored, source_text=None, source_path=None) == definition


async def test_an_execution_of_a_python_built_definition_resumes(tmp_home: Path) -> None:
    program = compile_definition(BUILT)
    waiting: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def listener(event: Any) -> None:
        if event.event_type == "review.waiting":
            waiting.set_result(event.execution_id)

    async with ExecutionService.open() as first:
        # The first process dies while the approval waits: nothing of it but the store remains.
        orchestrator = Orchestrator(
            program, store=first.store, runner=InlineRunner(), inputs={"x": 20}, inbox_poll_s=None
        )
        orchestrator.add_listener(listener)
        await orchestrator.start()
        execution_id = await waiting
        await first.store.flush()
    async with ExecutionService.open() as second:
        shown = await second.show(execution_id)
        assert shown.status.value == "waiting"
        resumed = asyncio.create_task(second.resume(execution_id))
        state = await second.send(
            execution_id, MessageKind.APPROVE, "review", {"by": "ann"}, wait_s=30
        )
        assert (state.applied, state.refusal) == (True, None)
        result = await resumed
    assert result.status.value == "completed"
    assert result.outputs == {"answer": 41}
    assert "pipeline.resumed" in result.events


def test_a_definition_that_could_not_be_resumed_is_refused_before_it_runs(
    tmp_home: Path,
) -> None:
    """What runs is what `resume` reads back: its stored YAML is validated up front."""
    import pytest

    from whenflow.domain.errors import DefinitionErrors

    bad = replace(BUILT, version="1.0")  # not MAJOR.MINOR.PATCH
    with pytest.raises(DefinitionErrors, match="not a valid semantic version"):
        whenflow.run(bad, {"x": "1"})
