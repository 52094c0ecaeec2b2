"""`whenflow run` sends `spec.notify` messages before it exits; `executions show` shows them."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from cli_helpers import run_cli, run_json, write_pipeline

from loopback_receivers import http_receiver

CANARY = "canary-e2e-4d1b90-never-shown"

PIPELINE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: nightly_load, version: 1.2.0}}
spec:
  notify:
    - on: [failed]
      webhook: {{url: "{url}/hook", signingSecret: "{{{{ secret('SIGNING') }}}}"}}
    - on: [failed]
      slack: {{url: "{url}/slack"}}
  nodes:
    - id: load
      task: {{type: shell, script: "echo refused $WF_INPUT_TOKEN >&2; exit 3"}}
      inputBindings: {{token: "{{{{ secret('TOKEN') }}}}"}}
"""


def test_a_failed_run_notifies_before_exiting_and_show_lists_it(tmp_path: Path) -> None:
    env = {"WHENFLOW_SECRET_TOKEN": CANARY, "WHENFLOW_SECRET_SIGNING": "sign-e2e-secret"}
    with http_receiver() as http:
        path = write_pipeline(tmp_path, "nightly.yaml", PIPELINE.format(url=http.url))
        result = run_json(tmp_path, "run", path, env=env, expect_code=1)
        # No wait: the run returned after its notifications were sent.
        hook, slack = http.on("/hook"), http.on("/slack")
    assert len(hook) == 1
    assert len(slack) == 1
    body = json.loads(hook[0].body)
    assert (body["pipeline"], body["node"], body["execution_id"]) == (
        "nightly_load",
        "load",
        result["executionId"],
    )
    expected = hmac.new(b"sign-e2e-secret", hook[0].body, hashlib.sha256).hexdigest()
    assert hook[0].headers["X-Whenflow-Signature"] == f"sha256={expected}"
    for delivery in (hook[0], slack[0]):
        assert CANARY.encode() not in delivery.body
    shown = run_cli(tmp_path, "executions", "show", result["executionId"])
    assert shown.returncode == 0, shown.stderr
    assert "notifications:" in shown.stdout
    assert "failed     webhook  1 attempt(s), sent" in shown.stdout
    document = run_json(tmp_path, "executions", "show", result["executionId"])
    assert sorted((n["channel"], n["status"]) for n in document["notifications"]) == [
        ("slack", "sent"),
        ("webhook", "sent"),
    ]
