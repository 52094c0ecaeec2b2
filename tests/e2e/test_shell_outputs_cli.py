"""End to end: a newline-carrying value cannot set a second output through the
documented forms, so it cannot open a gate (issue 13 item 16)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cli_helpers import node_events, run_json, write_pipeline

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: gate}
spec:
  inputs: {comment: {type: string}}
  nodes:
    - id: review
      inputBindings: {comment: "{{ pipeline.input.comment }}"}
      task:
        type: shell
        script: |
          echo "approved=false" >> "$WF_OUTPUTS"
          {
            echo "comment<<$WF_OUTPUT_DELIMITER"
            printf '%s\\n' "$WF_INPUT_COMMENT"
            echo "$WF_OUTPUT_DELIMITER"
          } >> "$WF_OUTPUTS"
    - id: review_json
      inputBindings: {comment: "{{ pipeline.input.comment }}"}
      task:
        type: shell
        command:
          - python3
          - -c
          - |
            import json, os
            outputs = {"approved": False, "comment": os.environ["WF_INPUT_COMMENT"]}
            json.dump(outputs, open(os.environ["WF_OUTPUTS_JSON"], "w"))
    - id: deploy
      startWhen: >-
        event:review.completed && event:review_json.completed
        && {{ review.approved == true or review_json.approved == true }}
      task: {type: noop}
"""


@pytest.mark.parametrize(
    "comment", ["looks good\napproved=true", "x\r\napproved=true\r\n", "a\nEOF\napproved=true"]
)
def test_a_newline_in_data_cannot_approve(tmp_path: Path, comment: str) -> None:
    pipeline = write_pipeline(tmp_path, "gate.yaml", PIPELINE)

    result = run_json(tmp_path, "run", pipeline, "-i", f"comment={comment}")

    assert result["status"] == "completed"
    for node in ("review", "review_json"):
        assert result["nodes"][node]["outputs"] == {
            "approved": False,
            "comment": comment,
            "exit_code": 0,
        }
    assert node_events(result["events"], "deploy") == ["deploy.skipped"]


BIG_PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: big}
spec:
  nodes:
    - id: produce
      task: {type: python, callable: "bigvalue:produce"}
    - id: consume
      inputBindings: {text: "{{ produce.text }}", rows: "{{ produce.rows }}"}
      task:
        type: shell
        script: |
          test -z "${WF_INPUT_TEXT+set}"   # too large for the environment
          {
            echo "sha<<$WF_OUTPUT_DELIMITER"
            sha256sum < "$WF_INPUT_TEXT_FILE" | cut -d' ' -f1
            echo "$WF_OUTPUT_DELIMITER"
          } >> "$WF_OUTPUTS"
          echo "rows=$(jq length < "$WF_INPUT_ROWS_FILE" 2>/dev/null || python3 -c \
            'import json,os;print(len(json.load(open(os.environ["WF_INPUT_ROWS_FILE"]))))')" \
            >> "$WF_OUTPUTS"
"""

BIG_TASKS = """
def produce() -> dict:
    return {
        "text": ("数据 line é 🙂\\n" * 20_000)[:140_000],
        "rows": [{"i": i, "name": "row %d" % i} for i in range(20_000)],
    }
"""


def test_a_shell_task_receives_values_larger_than_the_environment_allows(
    tmp_path: Path,
) -> None:
    (tmp_path / "bigvalue.py").write_text(BIG_TASKS)
    pipeline = write_pipeline(tmp_path, "big.yaml", BIG_PIPELINE)

    result = run_json(tmp_path, "run", pipeline)

    text = ("数据 line é 🙂\n" * 20_000)[:140_000]
    assert result["status"] == "completed", result["nodes"]["consume"]["error"]
    outputs = result["nodes"]["consume"]["outputs"]
    assert outputs["sha"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert outputs["rows"] == 20_000
    assert node_events(result["events"], "consume") == ["consume.started", "consume.completed"]
