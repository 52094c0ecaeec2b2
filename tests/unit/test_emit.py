"""A definition written back as YAML reads as the same definition.

`whenflow.run(definition)` stores this text with the execution, so that an
execution started from a Python-built definition can be resumed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from whenflow.domain.definitions import (
    NodeDefinition,
    ParamSpec,
    PipelineDefinition,
    RetryPolicy,
    TaskSpec,
)
from whenflow.dsl.emit import to_yaml
from whenflow.dsl.parse import parse_pipeline_file, parse_pipeline_text

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))

KITCHEN_SINK = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: sink, version: 2.1.0, description: every field once}
spec:
  inputs:
    day: {type: string, required: true, description: the day}
    n: {type: integer, default: 3}
  defaults: {retry: {maxAttempts: 2, delay: 1s}, timeout: 5m}
  concurrency: 8
  failFast: true
  stopWhen: "event:external.abort"
  timeout: 2h
  finallyGrace: 5s
  nodes:
    - id: a
      description: first
      task: {ref: "work@1.0.0"}
      inputBindings: {day: "{{ pipeline.input.day }}", nested: {k: ["{{ pipeline.input.n }}", 2]}}
    - id: b
      forEach: "{{ a.items }}"
      maxParallel: 4
      onItemError: continue
      allowFailure: true
      retry: {maxAttempts: 5, delay: 250ms, backoff: exponential, maxDelay: 10s, retryOn: [OSError]}
      timeout: 90s
      task: {type: shell, command: ["echo", "{{ item }}"], env: {X: "1"}}
    - id: c
      startWhen: "event:external.go && event:a.completed"
      stopWhen: "{{ a.n > 10 }}"
      within: 1h
      emits: [reminded]
      task: {type: approval, message: "go on with {{ a.n }}?", approvers: [alice], onTimeout: reject}
    - id: d
      finally: true
      deadline: 10m
      startWhen: "{{ ending.status == 'failed' }}"
      task: {type: noop}
  outputs:
    items: "{{ b.results }}"
---
apiVersion: whenflow/v1
kind: Task
metadata: {name: work, version: 1.0.0}
spec:
  type: python
  callable: "pkg.mod:work"
  inputs: {day: {type: string, required: true}, nested: {type: object}}
  outputs: {items: {type: array}, n: {type: integer}}
  emits: [progress, heartbeat]
"""


def comparable(definition: PipelineDefinition) -> PipelineDefinition:
    """Without the text it came from, and with task refs inlined as the emitter writes them."""
    nodes = tuple(replace(n, task=replace(n.task, ref=None)) for n in definition.nodes)
    return replace(definition, nodes=nodes, source_text=None, source_path=None)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_every_example_reads_back_equal(example: Path) -> None:
    original = parse_pipeline_file(example).definition
    again = parse_pipeline_text(to_yaml(original), "emitted.yaml").definition
    assert comparable(again) == comparable(original)


def test_every_field_reads_back_equal() -> None:
    original = parse_pipeline_text(KITCHEN_SINK, "sink.yaml").definition
    text = to_yaml(original)
    again = parse_pipeline_text(text, "emitted.yaml").definition
    assert comparable(again) == comparable(original)
    assert "ref:" not in text  # self-contained: the Task is written inline
    assert again.node("a").task.signature is not None
    assert again.node("a").task.signature.emits == ("progress", "heartbeat")
    assert again.node("c").emits == ("reminded",)


def test_a_python_built_definition_gets_a_text_that_compiles() -> None:
    definition = PipelineDefinition(
        name="built",
        version="1.0.0",
        inputs={"n": ParamSpec(type="integer", default=2)},
        nodes=(
            NodeDefinition(
                id="a",
                task=TaskSpec(type="noop"),
                input_bindings={"n": "{{ pipeline.input.n }}"},
                retry=RetryPolicy(max_attempts=3, delay_s=0.5),
                timeout_s=12.5,
            ),
            NodeDefinition(id="b", task=TaskSpec(type="noop"), start_when="event:a.failed"),
        ),
        outputs={"n": "{{ a.n }}"},
    )
    again = parse_pipeline_text(to_yaml(definition), "emitted.yaml").definition
    assert comparable(again) == comparable(definition)
