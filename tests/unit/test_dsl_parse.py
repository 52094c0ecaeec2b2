"""Pipeline files → definitions: the §2 example, task resolution, located errors, JSON Schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from whenflow.domain.definitions import (
    Backoff,
    NodeDefinition,
    ParamSpec,
    RetryPolicy,
    TaskSignature,
    TaskSpec,
)
from whenflow.domain.errors import DefinitionError, SourceLocation
from whenflow.dsl.json_schema import (
    definition_json_schema,
    pipeline_json_schema,
    task_json_schema,
)
from whenflow.dsl.parse import load_task_definitions, parse_pipeline_file, parse_pipeline_text
from whenflow.dsl.yaml_source import load_yaml_documents

DESIGN_EXAMPLE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata:
  name: feature_engineering          # [a-z][a-z0-9_-]*
  version: 1.0.0                     # semver; a published version is immutable
  description: Monthly features
spec:
  inputs:                            # typed; validated when an execution starts
    start_date: {type: string, required: true}
    end_date:   {type: string, required: true}
  defaults: {retry: {maxAttempts: 2, delay: 1s}, timeout: 30m}
  concurrency: 8                     # max nodes running at once in one execution
  nodes:
    - id: extract_data               # [a-z_][a-z0-9_]*, unique
      task: {type: python, callable: examples.features:extract}
      inputBindings:
        start: "{{ pipeline.input.start_date }}"
        end:   "{{ pipeline.input.end_date }}"
    - id: transform_data
      startWhen: "event:extract_data.completed && {{ extract_data.row_count > 0 }}"
      task: {ref: transform@1.2.0}   # a registered TaskDefinition
      inputBindings:
        path: "{{ extract_data.output_path }}"
      retry: {maxAttempts: 3, delay: 2s, backoff: exponential, maxDelay: 1m}
      timeout: 10m
    - id: notify_empty
      startWhen: "event:extract_data.completed && {{ extract_data.row_count == 0 }}"
      task: {type: shell, command: ["echo", "no rows"]}
  outputs:
    quality: "{{ transform_data.quality_score }}"
"""

TRANSFORM_TASK = """\
apiVersion: whenflow/v1
kind: Task
metadata: {name: transform, version: 1.2.0}
spec:
  type: python
  callable: examples.features:transform
  description: Clean and enrich the extracted rows
  inputs:
    path: {type: string, required: true}
  outputs:
    quality_score: {type: number, description: share of valid rows}
"""

TRANSFORM_SPEC = TaskSpec(
    type="python",
    config={"callable": "examples.features:transform"},
    signature=TaskSignature(
        inputs={"path": ParamSpec("string", required=True)},
        outputs={"quality_score": ParamSpec("number", description="share of valid rows")},
    ),
    ref="transform@1.2.0",
)

MINIMAL = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: demo}
spec:
  nodes:
    - id: a
      task: {type: shell, command: [echo]}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_design_example_parses_to_the_expected_definition(tmp_path: Path) -> None:
    pipeline_file = _write(tmp_path / "features.yaml", DESIGN_EXAMPLE)
    _write(tmp_path / "tasks" / "transform.yaml", TRANSFORM_TASK)

    parsed = parse_pipeline_file(pipeline_file)
    definition = parsed.definition

    assert (definition.name, definition.version) == ("feature_engineering", "1.0.0")
    assert definition.description == "Monthly features"
    assert definition.inputs == {
        "start_date": ParamSpec("string", required=True),
        "end_date": ParamSpec("string", required=True),
    }
    assert definition.concurrency == 8
    assert definition.outputs == {"quality": "{{ transform_data.quality_score }}"}
    assert definition.source_path == str(pipeline_file)
    assert definition.source_text == DESIGN_EXAMPLE
    default_retry = RetryPolicy(max_attempts=2, delay_s=1.0)
    assert definition.nodes == (
        NodeDefinition(
            id="extract_data",
            task=TaskSpec("python", {"callable": "examples.features:extract"}),
            input_bindings={
                "start": "{{ pipeline.input.start_date }}",
                "end": "{{ pipeline.input.end_date }}",
            },
            retry=default_retry,
            timeout_s=1800.0,
        ),
        NodeDefinition(
            id="transform_data",
            task=TRANSFORM_SPEC,
            start_when="event:extract_data.completed && {{ extract_data.row_count > 0 }}",
            input_bindings={"path": "{{ extract_data.output_path }}"},
            retry=RetryPolicy(3, 2.0, Backoff.EXPONENTIAL, max_delay_s=60.0),
            timeout_s=600.0,
        ),
        NodeDefinition(
            id="notify_empty",
            task=TaskSpec("shell", {"command": ["echo", "no rows"]}),
            start_when="event:extract_data.completed && {{ extract_data.row_count == 0 }}",
            retry=default_retry,
            timeout_s=1800.0,
        ),
    )
    assert parsed.node_index == {"extract_data": 0, "transform_data": 1, "notify_empty": 2}
    assert parsed.node_path("transform_data", "startWhen") == ("spec", "nodes", 1, "startWhen")
    where = parsed.locate_node("transform_data", "startWhen")
    assert (where.line, where.column) == (20, 18)
    # A column inside the expression, for the validator's messages.
    text = definition.node("transform_data").start_when or ""
    inside = parsed.source_map.locate_in_value(
        parsed.node_path("transform_data", "startWhen"), text.index("{{")
    )
    assert DESIGN_EXAMPLE.splitlines()[inside.line - 1][inside.column - 1 :].startswith("{{ ext")
    assert parsed.field_name(parsed.node_path("notify_empty", "task")) == "nodes.notify_empty.task"


def test_pipeline_version_defaults_and_nodes_without_defaults() -> None:
    definition = parse_pipeline_text("---\n" + MINIMAL + "---\n").definition
    assert definition.version == "0.1.0"
    [node] = definition.nodes
    assert node.retry == RetryPolicy()
    assert node.timeout_s is None
    assert node.task.signature is None


def test_inline_task_signature_and_node_fields() -> None:
    text = MINIMAL + (
        "    - id: b\n"
        "      task: {type: python, callable: m:f, inputs: {x: {type: integer}}}\n"
        "      forEach: '{{ a.items }}'\n"
        "      maxParallel: 4\n"
        "      onItemError: drop\n"
        "      allowFailure: true\n"
        "      stopWhen: false\n"
        "      within: 1h30m\n"
        "  failFast: true\n"
    )
    definition = parse_pipeline_text(text).definition
    node = definition.node("b")
    assert node.task == TaskSpec(
        "python",
        {"callable": "m:f"},
        TaskSignature(inputs={"x": ParamSpec("integer")}, outputs={}),
    )
    assert (node.for_each, node.max_parallel, node.on_item_error) == ("{{ a.items }}", 4, "drop")
    assert (node.allow_failure, node.stop_when, node.within_s) == (True, "false", 5400.0)
    assert definition.fail_fast is True


def test_task_in_the_same_file_and_next_to_it(tmp_path: Path) -> None:
    same_file = MINIMAL + "    - id: b\n      task: {ref: transform@1.2.0}\n---\n" + TRANSFORM_TASK
    assert parse_pipeline_text(same_file).definition.node("b").task == TRANSFORM_SPEC

    pipeline_file = _write(tmp_path / "p.yaml", same_file.split("---")[0])
    _write(tmp_path / "transform.yml", TRANSFORM_TASK)
    _write(tmp_path / "other_pipeline.yaml", MINIMAL)  # first document is not a Task: ignored
    _write(tmp_path / "notes.yaml", "a: b: c\n")  # not a Task file and broken: ignored
    assert parse_pipeline_file(pipeline_file).definition.node("b").task == TRANSFORM_SPEC


def test_task_paths_and_load_task_definitions(tmp_path: Path) -> None:
    library = tmp_path / "library"
    _write(library / "deep" / "transform.yaml", TRANSFORM_TASK)
    assert load_task_definitions([library]) == load_task_definitions(
        [library / "deep" / "transform.yaml"]
    )
    [(ref, definition)] = load_task_definitions([library]).items()
    assert ref == "transform@1.2.0"
    assert definition.task == TRANSFORM_SPEC
    assert definition.description == "Clean and enrich the extracted rows"

    pipeline_file = _write(
        tmp_path / "p" / "p.yaml", MINIMAL + "    - id: b\n      task: {ref: transform@1.2.0}\n"
    )
    parsed = parse_pipeline_file(pipeline_file, task_paths=[library])
    assert parsed.definition.node("b").task == TRANSFORM_SPEC


def _issues(call: Any) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        call()
    return [str(issue) for issue in caught.value.issues]


NODE_B = "    - id: b\n      task: {type: shell}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            MINIMAL + "      startwhen: 'true'\n",
            "p.yaml:8:7: nodes.a.startwhen: unknown field 'startwhen' (did you mean 'startWhen'?)",
            id="unknown-field",
        ),
        pytest.param(
            MINIMAL + "      retry: {max_attempts: 3, maxAttempts: 3}\n",
            "p.yaml:8:15: nodes.a.retry.max_attempts: unknown field 'max_attempts' "
            "(did you mean 'maxAttempts'?)",
            id="snake-case-field",
        ),
        pytest.param(
            MINIMAL + "      timeout: 10 minutes\n",
            "p.yaml:8:16: nodes.a.timeout: '10 minutes' is not a duration",
            id="bad-duration",
        ),
        pytest.param(
            MINIMAL.replace("id: a", "id: Extract-Data"),
            "p.yaml:6:11: nodes[0].id: 'Extract-Data' is not a valid node id",
            id="bad-node-id",
        ),
        pytest.param(
            MINIMAL + NODE_B + NODE_B,
            "p.yaml:10:11: nodes[2].id: duplicate node id 'b' (first used at line 8)",
            id="duplicate-id",
        ),
        pytest.param(
            MINIMAL + "    - id: b\n      task: {ref: transfrom@1.2.0}\n---\n" + TRANSFORM_TASK,
            "p.yaml:9:19: nodes.b.task.ref: unknown task 'transfrom@1.2.0' "
            "(did you mean 'transform@1.2.0'?); known tasks: transform@1.2.0",
            id="unknown-task-ref",
        ),
        pytest.param(
            MINIMAL + "    - id: b\n",
            "p.yaml:8:7: nodes.b.task: missing required field 'task'",
            id="missing-field",
        ),
        pytest.param(
            MINIMAL + "      onItemError: stop\n",
            "p.yaml:8:20: nodes.a.onItemError: must be 'fail', 'continue' or 'drop', got 'stop'",
            id="bad-choice",
        ),
        pytest.param(
            MINIMAL.replace("{name: demo}", "{name: demo, version: 1.0}"),
            "p.yaml:3:33: metadata.version: version 1.0 was read as a number",
            id="numeric-version",
        ),
        pytest.param(
            MINIMAL.replace("Pipeline", "Pipline"),
            "p.yaml:2:7: kind: kind must be Pipeline or Task (got 'Pipline')",
            id="unknown-kind",
        ),
        pytest.param(
            TRANSFORM_TASK,
            "p.yaml:2:7: kind: no `kind: Pipeline` document in this file",
            id="no-pipeline",
        ),
        pytest.param(
            MINIMAL + "---\n" + MINIMAL,
            "p.yaml:10:7: kind: a file holds exactly one Pipeline",
            id="two-pipelines",
        ),
        pytest.param(
            MINIMAL + "      task: {type: python}\n",
            "p.yaml:8:7: duplicate key 'task' (first defined at line 7)",
            id="duplicate-yaml-key",
        ),
        pytest.param(
            MINIMAL + "      startWhen: event:a.completed: x\n",
            "p.yaml:8:35: mapping values are not allowed here",
            id="malformed-yaml",
        ),
    ],
)
def test_errors_are_located(text: str, expected: str) -> None:
    issues = _issues(lambda: parse_pipeline_text(text, "p.yaml"))
    assert any(issue.startswith(expected) for issue in issues), issues


def test_all_schema_issues_are_reported_together_in_file_order() -> None:
    text = MINIMAL + "      timeout: soon\n      maxParallel: 0\n  concurrency: many\n"
    issues = _issues(lambda: parse_pipeline_text(text, "p.yaml"))
    assert [issue.split(": ")[0] for issue in issues] == [
        "p.yaml:8:16",
        "p.yaml:9:20",
        "p.yaml:10:16",
    ]


def test_broken_task_file_is_located_in_that_file(tmp_path: Path) -> None:
    pipeline_file = _write(tmp_path / "p.yaml", MINIMAL)
    _write(tmp_path / "tasks" / "t.yaml", TRANSFORM_TASK.replace("type: python", "type: [python"))
    [issue] = _issues(lambda: parse_pipeline_file(pipeline_file))
    assert issue.startswith(f"{tmp_path / 'tasks' / 't.yaml'}:")

    _write(tmp_path / "tasks" / "t.yaml", TRANSFORM_TASK.replace("version: 1.2.0", "version: 1"))
    [issue] = _issues(lambda: parse_pipeline_file(pipeline_file))
    assert issue.startswith(f"{tmp_path / 'tasks' / 't.yaml'}:3:")
    assert "metadata.version" in issue


def test_same_ref_with_different_content_is_an_error(tmp_path: Path) -> None:
    pipeline_file = _write(tmp_path / "p.yaml", MINIMAL + "---\n" + TRANSFORM_TASK)
    _write(tmp_path / "tasks" / "copy.yaml", TRANSFORM_TASK)  # identical: fine
    assert parse_pipeline_file(pipeline_file).definition.name == "demo"

    _write(tmp_path / "tasks" / "t.yaml", TRANSFORM_TASK.replace("features:transform", "x:y"))
    [issue] = _issues(lambda: parse_pipeline_file(pipeline_file))
    assert "transform@1.2.0 is defined twice with different content" in issue
    assert f"(first at {pipeline_file}:11:" in issue


def test_missing_file_has_a_clear_message_and_no_location(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_pipeline_file(tmp_path / "nope.yaml")
    [issue] = caught.value.issues
    assert issue.location is None
    assert issue.message == f"no such file: {tmp_path / 'nope.yaml'}"


def test_issue_fields_name_nodes_by_id() -> None:
    text = MINIMAL + "    - id: b\n      task: {type: shell}\n      retry: {maxAttempts: 0}\n"
    with pytest.raises(DefinitionError) as caught:
        parse_pipeline_text(text, "p.yaml")
    [issue] = caught.value.issues
    assert issue.field == "nodes.b.retry.maxAttempts"
    assert issue.location == SourceLocation("p.yaml", 10, 28)


# ------------------------------------------------------------ JSON Schema


def _conforms(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """A small JSON Schema check: the keywords pydantic emits for these models."""
    if "$ref" in schema:
        return _conforms(value, root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root)
    if "anyOf" in schema and not any(_conforms(value, s, root) for s in schema["anyOf"]):
        return False
    if "oneOf" in schema and sum(_conforms(value, s, root) for s in schema["oneOf"]) != 1:
        return False
    if "const" in schema and value != schema["const"]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    types = schema.get("type")
    if types is not None:
        kinds = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
            "null": value is None,
        }
        if not any(kinds[t] for t in ([types] if isinstance(types, str) else types)):
            return False
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return False
        if len(value) < schema.get("minLength", 0):
            return False
    if isinstance(value, int | float) and value < schema.get("minimum", value):
        return False
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return False
        return all(_conforms(item, schema.get("items", {}), root) for item in value)
    if isinstance(value, dict):
        if not set(schema.get("required", ())) <= set(value):
            return False
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                if not _conforms(item, properties[key], root):
                    return False
            elif extra is False or (isinstance(extra, dict) and not _conforms(item, extra, root)):
                return False
    return True


def _data(text: str) -> Any:
    [(data, _)] = load_yaml_documents(text, "x.yaml")
    return data


def test_json_schemas_accept_the_design_example_and_refuse_typos() -> None:
    pipeline, task, combined = pipeline_json_schema(), task_json_schema(), definition_json_schema()
    assert pipeline["title"] == "whenflow Pipeline"
    assert pipeline["$schema"].startswith("https://json-schema.org/")
    assert combined["title"] == "whenflow definition"

    example, transform = _data(DESIGN_EXAMPLE), _data(TRANSFORM_TASK)
    assert _conforms(example, pipeline, pipeline)
    assert _conforms(transform, task, task)
    assert _conforms(example, combined, combined)
    assert _conforms(transform, combined, combined)
    assert not _conforms(transform, pipeline, pipeline)

    typo = _data(DESIGN_EXAMPLE.replace("startWhen", "startwhen"))
    assert not _conforms(typo, pipeline, pipeline)
    bad_id = _data(DESIGN_EXAMPLE.replace("id: notify_empty", "id: Notify"))
    assert not _conforms(bad_id, combined, combined)
    assert pipeline["$defs"]["NodeModel"]["properties"]["startWhen"]["title"] == "startWhen"
