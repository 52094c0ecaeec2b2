"""Declared custom events through the real CLI, in every isolation (issue 13 item 9):
`@whenflow.task(emits=[...])` lets a trigger wait for the event; an undeclared
`ctx.emit` fails the attempt with a message that says how to declare it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import node_events, run_json, write_pipeline

TASKS = """
import whenflow


@whenflow.task(emits=["tick"])
def declared(ctx) -> dict:
    ctx.emit("tick", {"n": 1})
    return {"ok": True}


def undeclared(ctx) -> dict:
    ctx.emit("tock", {})
    return {"ok": True}
"""

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: declared}
spec:
  nodes:
    - id: src
      task: {type: python, callable: "ticking:declared", isolation: %(isolation)s}
    - id: on_tick
      startWhen: "event:src.tick"
      task: {type: noop}
    - id: bad
      task: {type: python, callable: "ticking:undeclared", isolation: %(isolation)s}
"""


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_declared_events_publish_and_undeclared_ones_fail(tmp_path: Path, isolation: str) -> None:
    (tmp_path / "ticking.py").write_text(TASKS)
    pipeline = write_pipeline(tmp_path, "p.yaml", PIPELINE % {"isolation": isolation})

    result = run_json(tmp_path, "run", pipeline, expect_code=1)

    events = result["events"]
    assert node_events(events, "src") == ["src.started", "src.tick", "src.completed"]
    assert node_events(events, "on_tick") == ["on_tick.started", "on_tick.completed"]
    assert events.index("on_tick.started") > events.index("src.tick")
    assert node_events(events, "bad") == ["bad.started", "bad.failed"]
    error = result["nodes"]["bad"]["error"]
    assert "UndeclaredEvent" in error or "does not declare" in error
    assert "'tock', which it does not declare (declared: none)" in error
    assert "emits" in error
