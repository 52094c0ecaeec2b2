"""`whenflow run`, `resume`, `executions …`, `graph` and `schema` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import EXAMPLES, connect_db, db_events, run_cli, run_json, write_pipeline

RESULT_KEYS = {
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
NODE_KEYS = {"status", "attempts", "outputs", "error"}

FAILING = """
    apiVersion: whenflow/v1
    kind: Pipeline
    metadata: {name: failing, version: 0.1.0}
    spec:
      nodes:
        - id: first
          task: {type: noop}
        - id: boom
          task: {type: shell, script: "echo going down >&2; exit 3"}
          startWhen: "event:first.completed"
        - id: after
          task: {type: noop}
          startWhen: "event:boom.completed"
"""

LITERAL = """
    apiVersion: whenflow/v1
    kind: Pipeline
    metadata: {name: literal, version: 0.1.0}
    spec:
      inputs:
        s: {type: string, required: true}
      nodes:
        - id: produce_input
          task: {type: noop}
          inputBindings:
            s: "{{ pipeline.input.s }}"
        - id: produce_python
          task: {type: python, callable: "crashtasks:template_text"}
        - id: echo_input
          task:
            type: shell
            script: |
              printf 'v=%s\\n' "$WF_INPUT_S" >> "$WF_OUTPUTS"
              printf 't=%s\\n' "$WF_INPUT_T" >> "$WF_OUTPUTS"
          inputBindings:
            s: "{{ produce_input.s }}"
            t: "got {{ produce_input.s }}"
        - id: echo_python
          task:
            type: shell
            script: |
              printf 'v=%s\\n' "$WF_INPUT_S" >> "$WF_OUTPUTS"
          inputBindings:
            s: "{{ produce_python.s }}"
        - id: echo_argv
          task: {type: shell, command: ["printf", "%s", "{{ produce_python.s }}"]}
"""


def _run_branch(home: Path, amount: int = 5000) -> dict[str, Any]:
    result: dict[str, Any] = run_json(
        home, "run", EXAMPLES / "branch_and_join.yaml", "-i", f"amount={amount}"
    )
    return result


def test_run_json_prints_exactly_one_object_of_the_documented_shape(tmp_path: Path) -> None:
    proc = run_cli(
        tmp_path, "run", EXAMPLES / "branch_and_join.yaml", "-i", "amount=5000", "--json"
    )

    assert proc.returncode == 0, proc.stderr
    # Exactly one JSON document on stdout and nothing else there.
    decoder = json.JSONDecoder()
    result, end = decoder.raw_decode(proc.stdout)
    assert proc.stdout[end:].strip() == ""
    assert set(result) == RESULT_KEYS
    assert result["pipeline"] == "branch_and_join"
    assert result["version"] == "1.0.0"
    assert result["status"] == "completed"
    assert result["error"] is None
    assert list(result["nodes"]) == ["check", "manual_review", "auto_approve", "join"]
    for node in result["nodes"].values():
        assert set(node) == NODE_KEYS
    assert result["nodes"]["check"] == {
        "status": "completed",
        "attempts": 1,
        "outputs": {"amount": 5000, "large": True},
        "error": None,
    }
    assert result["events"][0] == "pipeline.started"
    assert result["events"][-1] == "pipeline.completed"
    # The events list is the stored log, in seq order.
    stored = db_events(tmp_path, result["executionId"])
    assert [etype for _, etype in stored] == result["events"]


def test_run_exits_1_when_the_execution_fails(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, "failing.yaml", FAILING)

    result = run_json(tmp_path, "run", path, expect_code=1)

    assert result["status"] == "failed"
    assert result["nodes"]["first"]["status"] == "completed"
    boom = result["nodes"]["boom"]
    assert boom["status"] == "failed"
    assert boom["error"]
    assert "3" in boom["error"]  # the exit status is in the message
    assert result["nodes"]["after"]["status"] == "skipped"
    assert "boom.failed" in result["events"]
    assert result["events"][-1] == "pipeline.failed"
    # stderr of the task went to the log store, not to whenflow's stdout.
    logs = run_json(tmp_path, "executions", "logs", result["executionId"], "--node", "boom")
    assert [(x["stream"], x["message"]) for x in logs] == [("stderr", "going down")]


def test_run_without_json_prints_plain_progress_lines(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "run", EXAMPLES / "branch_and_join.yaml", "-i", "amount=10")

    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout  # no terminal: no colours, no live table
    lines = proc.stdout.splitlines()
    progress = [line.split(" ", 1)[1] for line in lines if line[:2].isdigit()]
    summary = [line for line in lines if line.startswith("execution ")]
    # The id comes first, before anything runs, and is the one the summary names.
    assert progress[0] == summary[0].split(":")[0]
    assert progress[1] == "pipeline started"
    assert "check started (attempt 1)" in progress
    assert "check completed" in progress
    assert any(p.startswith("manual_review skipped") for p in progress)
    assert "join completed" in progress
    assert progress[-1] == "pipeline completed"
    assert len(summary) == 1
    assert summary[0].endswith(": completed")


def test_run_failed_without_json_names_the_failed_node(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, "failing.yaml", FAILING)

    proc = run_cli(tmp_path, "run", path)

    assert proc.returncode == 1
    assert "boom failed (attempt 1)" in proc.stdout
    assert "pipeline failed" in proc.stdout


def test_run_missing_required_input_exits_2_naming_it(tmp_path: Path) -> None:
    proc = run_cli(
        tmp_path,
        "run",
        EXAMPLES / "feature_engineering.yaml",
        "-i",
        "start_date=2024-01-01",
        "--json",
    )

    assert proc.returncode == 2
    assert "end_date" in proc.stderr
    assert "required" in proc.stderr
    assert proc.stdout == ""
    # Nothing was started.
    assert run_json(tmp_path, "executions", "list") == []


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-i", "amount=abc"], "amount"),
        (["-i", "amount=5", "-i", "bogus=1"], "bogus"),
        (["-i", "amount"], "amount"),
    ],
)
def test_run_bad_input_exits_2(tmp_path: Path, args: list[str], named: str) -> None:
    proc = run_cli(tmp_path, "run", EXAMPLES / "branch_and_join.yaml", *args, "--json")

    assert proc.returncode == 2
    assert named in proc.stderr
    assert proc.stdout == ""


def test_run_invalid_definition_exits_2_with_location(tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        "bad.yaml",
        """
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {name: bad, version: 0.1.0}
        spec:
          nodes:
            - id: a
              task: {type: noop}
              startWhen: "event:nobody.completed"
        """,
    )

    proc = run_cli(tmp_path, "run", path, "--json")

    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{path}:8:")
    assert "nobody" in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "whenflow.db").exists()


def test_inputs_file_json_and_yaml_with_pairs_winning(tmp_path: Path) -> None:
    as_json = tmp_path / "inputs.json"
    as_json.write_text(json.dumps({"start_date": "2024-01-01", "end_date": "2024-01-05"}))
    as_yaml = tmp_path / "inputs.yaml"
    as_yaml.write_text('start_date: "2024-01-01"\nend_date: "2024-01-10"\n')
    pipeline = EXAMPLES / "feature_engineering.yaml"

    from_json = run_json(tmp_path, "run", pipeline, "--inputs-file", as_json)
    from_yaml = run_json(tmp_path, "run", pipeline, "--inputs-file", as_yaml)
    overridden = run_json(
        tmp_path, "run", pipeline, "--inputs-file", as_yaml, "-i", "end_date=2024-01-02"
    )

    assert from_json["nodes"]["extract_data"]["outputs"]["row_count"] == 5
    assert from_yaml["nodes"]["extract_data"]["outputs"]["row_count"] == 10
    assert overridden["nodes"]["extract_data"]["outputs"]["row_count"] == 2


def test_inputs_file_yaml_unquoted_date_is_a_string_input(tmp_path: Path) -> None:
    as_yaml = tmp_path / "inputs.yaml"
    as_yaml.write_text("start_date: 2024-01-01\nend_date: 2024-01-03\n")

    result = run_json(
        tmp_path, "run", EXAMPLES / "feature_engineering.yaml", "--inputs-file", as_yaml
    )

    assert result["nodes"]["extract_data"]["outputs"]["row_count"] == 3


@pytest.mark.parametrize(
    ("content", "suffix"),
    [("[1, 2]", ".json"), ("{not json", ".json"), ("- a\n- b\n", ".yaml")],
)
def test_inputs_file_that_is_not_a_mapping_exits_2(
    tmp_path: Path, content: str, suffix: str
) -> None:
    inputs = tmp_path / f"inputs{suffix}"
    inputs.write_text(content)

    proc = run_cli(
        tmp_path, "run", EXAMPLES / "branch_and_join.yaml", "--inputs-file", inputs, "--json"
    )

    assert proc.returncode == 2
    assert str(inputs) in proc.stderr
    assert proc.stdout == ""


def test_template_text_from_the_pool_reaches_shell_literally(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, "literal.yaml", LITERAL)

    result = run_json(
        tmp_path,
        "run",
        path,
        "-i",
        "s={{ 7*7 }}",
        env={"PYTHONPATH": str(Path(__file__).parent)},
    )

    assert result["status"] == "completed", result
    nodes = result["nodes"]
    assert nodes["produce_input"]["outputs"] == {"s": "{{ 7*7 }}"}
    assert nodes["produce_python"]["outputs"] == {"s": "{{ 7*7 }}"}
    assert nodes["echo_input"]["outputs"]["v"] == "{{ 7*7 }}"
    assert nodes["echo_input"]["outputs"]["t"] == "got {{ 7*7 }}"
    assert nodes["echo_python"]["outputs"]["v"] == "{{ 7*7 }}"
    logs = run_json(tmp_path, "executions", "logs", result["executionId"], "--node", "echo_argv")
    assert [x["message"] for x in logs] == ["{{ 7*7 }}"]


def test_executions_commands_read_back_the_run(tmp_path: Path) -> None:
    first = _run_branch(tmp_path, 5000)
    second = _run_branch(tmp_path, 10)
    failed = run_json(tmp_path, "run", write_pipeline(tmp_path, "f.yaml", FAILING), expect_code=1)
    eid = first["executionId"]

    listed = run_json(tmp_path, "executions", "list")
    assert [r["executionId"] for r in listed] == [
        failed["executionId"],
        second["executionId"],
        eid,
    ]
    assert {r["status"] for r in listed} == {"completed", "failed"}
    only_failed = run_json(tmp_path, "executions", "list", "--status", "failed")
    assert [r["executionId"] for r in only_failed] == [failed["executionId"]]
    assert len(run_json(tmp_path, "executions", "list", "--limit", "1")) == 1

    assert run_json(tmp_path, "executions", "show", eid) == first

    events = run_json(tmp_path, "executions", "events", eid)
    assert [e["seq"] for e in events] == list(range(1, len(first["events"]) + 1))
    assert [e["eventType"] for e in events] == first["events"]
    assert events[0]["payload"] == {"inputs": {"amount": 5000}}
    assert len({e["eventId"] for e in events}) == len(events)

    variables = run_json(tmp_path, "executions", "vars", eid)
    by_key = {(v["scope"], v["name"]): v["value"] for v in variables}
    assert by_key[("pipeline.input", "amount")] == 5000
    assert by_key[("check", "large")] is True
    assert by_key[("manual_review", "decision")] == "reviewed"
    assert by_key[("join", "decision")] == "reviewed"
    assert not any(scope == "auto_approve" for scope, _ in by_key)

    assert run_json(tmp_path, "executions", "logs", eid) == []

    text = run_cli(tmp_path, "executions", "events", eid)
    assert text.returncode == 0
    assert [line.split()[2] for line in text.stdout.splitlines()] == first["events"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("run", EXAMPLES / "branch_and_join.yaml", "-i", "amount=5000"), id="branch"),
        pytest.param(("run", EXAMPLES / "fan_out_fan_in.yaml", "-i", "shards=3"), id="fan_out"),
        pytest.param(("run", EXAMPLES / "retry_timeout.yaml"), id="retry"),
        pytest.param(
            (
                "run",
                EXAMPLES / "feature_engineering.yaml",
                "-i",
                "start_date=2024-01-01",
                "-i",
                "end_date=2024-01-08",
            ),
            id="file_outputs",
        ),
    ],
)
def test_show_and_resume_print_the_same_object_as_run(
    tmp_path: Path, args: tuple[str | Path, ...]
) -> None:
    ran = run_json(tmp_path, *args)
    eid = ran["executionId"]

    shown = run_json(tmp_path, "executions", "show", eid)
    resumed = run_json(tmp_path, "resume", eid)

    assert shown == resumed
    assert shown == ran


def test_unknown_execution_is_an_error(tmp_path: Path) -> None:
    _run_branch(tmp_path)  # a store with something in it
    missing = "00000000-0000-0000-0000-000000000000"

    for args in (("executions", "show", missing), ("resume", missing)):
        proc = run_cli(tmp_path, *args, "--json")
        assert proc.returncode == 1
        assert missing in proc.stderr
        assert proc.stdout == ""


def test_resume_of_a_finished_execution_runs_nothing(tmp_path: Path) -> None:
    ran = _run_branch(tmp_path)
    conn = connect_db(tmp_path)
    try:
        before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()

    resumed = run_json(tmp_path, "resume", ran["executionId"])

    assert resumed["status"] == "completed"
    assert len(db_events(tmp_path, ran["executionId"])) == before


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("mermaid", ["flowchart", "check", "manual_review", "auto_approve", "join"]),
        ("dot", ['digraph "branch_and_join"', '"check" -> "manual_review"', '"join"']),
    ],
)
def test_graph_formats(tmp_path: Path, fmt: str, expected: list[str]) -> None:
    proc = run_cli(tmp_path, "graph", EXAMPLES / "branch_and_join.yaml", "--format", fmt)

    assert proc.returncode == 0, proc.stderr
    for text in expected:
        assert text in proc.stdout


def test_graph_rejects_an_unknown_format(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "graph", EXAMPLES / "branch_and_join.yaml", "--format", "png")

    assert proc.returncode == 2
    assert "png" in proc.stderr


def test_schema_is_a_json_schema_for_pipelines_and_tasks(tmp_path: Path) -> None:
    every = run_cli(tmp_path, "schema")
    pipeline = run_cli(tmp_path, "schema", "--kind", "pipeline")
    bad = run_cli(tmp_path, "schema", "--kind", "nonsense")

    assert every.returncode == 0
    schema = json.loads(every.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert len(schema["oneOf"]) == 2
    pipeline_schema = json.loads(pipeline.stdout)
    assert "apiVersion" in pipeline_schema["properties"]
    assert bad.returncode == 2
