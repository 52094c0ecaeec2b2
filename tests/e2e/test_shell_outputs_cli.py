"""End to end: a newline-carrying value cannot set a second output through the
documented forms, so it cannot open a gate (issue 13 item 16)."""

from __future__ import annotations

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
