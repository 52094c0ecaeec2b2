"""The CLI against a real `whenflow server` (`--server URL` / `WHENFLOW_SERVER`, `--token`):
pipelines push/publish/list/show, start --wait, executions show/events/logs/list,
approve, events send, nodes stop, cancel, retry, and its errors; and the registry
commands and `start` against the embedded store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import EXAMPLES, run_cli, run_json
from server_helpers import Server, gate_pipeline, running_server, wait_for_file

from whenflow import Client

pytestmark = pytest.mark.slow

FEATURES = EXAMPLES / "feature_engineering.yaml"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("cli-server-home")
    with running_server(home) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as opened:
        yield opened


def _remote(server: Server, home: Path, *args: str | Path, code: int = 0) -> str:
    proc = run_cli(home, "--server", server.url, *args)
    assert proc.returncode == code, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _remote_json(server: Server, home: Path, *args: str | Path) -> object:
    return json.loads(_remote(server, home, *args, "--json"))


def test_push_publish_start_wait_and_read_through_the_server(
    server: Server, client: Client, tmp_path: Path
) -> None:
    # The task definition feature_engineering uses first: a `kind: Task` file.
    task = _remote(
        server, tmp_path, "pipelines", "push", EXAMPLES / "tasks" / "transform.yaml", "--publish"
    )
    assert task.strip() == "task transform 1.2.0: published"
    assert client.pipeline("transform", "1.2.0", kind="tasks")["status"] == "published"
    pushed = _remote_json(server, tmp_path, "pipelines", "push", FEATURES)
    assert isinstance(pushed, dict)
    stored = client.pipeline("feature_engineering", "1.0.0")
    assert pushed == {k: v for k, v in stored.items() if k != "yaml"}
    assert (pushed["name"], pushed["version"], pushed["status"]) == (
        "feature_engineering",
        "1.0.0",
        "draft",
    )
    published = _remote(server, tmp_path, "pipelines", "publish", "feature_engineering", "1.0.0")
    assert published.strip() == "pipeline feature_engineering 1.0.0: published"
    listed = _remote_json(server, tmp_path, "pipelines", "list")
    assert listed == client.pipelines()
    table = _remote(server, tmp_path, "pipelines", "show", "feature_engineering")
    assert "1.0.0" in table
    assert "published" in table
    yaml_text = _remote(
        server, tmp_path, "pipelines", "show", "feature_engineering", "--version", "1.0.0"
    )
    assert yaml_text == FEATURES.read_text()

    ended = _remote_json(
        server, tmp_path, "start", "feature_engineering", "--version", "1.0.0",
        "-i", "start_date=2025-01-01", "-i", "end_date=2025-01-31", "--wait",
    )  # fmt: skip
    assert isinstance(ended, dict)
    assert ended["status"] == "completed"
    assert ended["nodes"]["extract_data"]["outputs"]["row_count"] == 31
    execution_id = ended["executionId"]

    assert _remote_json(server, tmp_path, "executions", "show", execution_id) == client.execution(
        execution_id
    )
    shown = _remote(server, tmp_path, "executions", "show", execution_id)
    assert f"execution {execution_id}: completed" in shown
    assert "extract_data" in shown
    events = _remote_json(server, tmp_path, "executions", "events", execution_id)
    assert events == {"items": client.all_events(execution_id), "nextSince": None}
    text_events = _remote(server, tmp_path, "executions", "events", execution_id)
    assert text_events.strip().splitlines()[-1].endswith("pipeline.completed")
    variables = _remote_json(server, tmp_path, "executions", "vars", execution_id)
    assert variables == client.variables(execution_id)
    logs = _remote_json(
        server, tmp_path, "executions", "logs", execution_id, "--node", "extract_data"
    )
    assert logs == client.logs(execution_id, "extract_data")
    runs = _remote_json(server, tmp_path, "executions", "list", "--pipeline", "feature_engineering")
    assert isinstance(runs, dict)
    assert execution_id in {r["executionId"] for r in runs["items"]}


def test_approve_through_the_server_runs_the_branch_and_a_second_decision_fails(
    server: Server, client: Client, tmp_path: Path
) -> None:
    _remote(server, tmp_path, "pipelines", "push", "--publish", EXAMPLES / "approval_gate.yaml")
    started = _remote_json(server, tmp_path, "start", "approval_gate", "-i", "artifact=cli.tgz")
    assert isinstance(started, dict)
    execution_id = started["executionId"]
    for event in client.stream(execution_id, timeout=60):
        if event["eventType"] == "review.waiting":
            break
    decided = _remote(server, tmp_path, "approve", execution_id, "review", "--by", "alice")
    assert decided.strip() == "review: approved"
    again = run_cli(
        tmp_path, "--server", server.url, "reject", execution_id, "review", "--by", "bob"
    )
    assert again.returncode == 1
    assert again.stderr.startswith("error: 409 conflict: ")
    assert len(again.stderr.strip().splitlines()) == 1
    ended = client.wait(execution_id, timeout=120)
    assert ended["nodes"]["ship"]["status"] == "completed"
    assert ended["nodes"]["roll_back"]["status"] == "skipped"


def test_nodes_stop_cancel_and_events_send_through_the_server(
    server: Server, client: Client, tmp_path: Path
) -> None:
    tail = "    - id: after_stop\n      startWhen: event:a.stopped\n      task: {type: noop}\n"
    gates = tmp_path / "gates"
    gates.mkdir()
    definition = tmp_path / "cli_stop.yaml"
    definition.write_text(gate_pipeline("cli_stop", gates, tail))
    _remote(server, tmp_path, "pipelines", "push", definition, "--publish")
    started = _remote_json(server, tmp_path, "start", "cli_stop", "-i", "tag=n")
    assert isinstance(started, dict)
    wait_for_file(gates / "ready-n-a")
    stopped = _remote_json(server, tmp_path, "nodes", "stop", started["executionId"], "a")
    assert stopped == {"messageId": stopped["messageId"], "applied": True, "refusal": None}  # type: ignore[index]
    ended = client.wait(started["executionId"], timeout=60)
    assert ended["nodes"]["a"]["status"] == "stopped"
    assert ended["nodes"]["after_stop"]["status"] == "completed"

    started = _remote_json(server, tmp_path, "start", "cli_stop", "-i", "tag=k")
    assert isinstance(started, dict)
    wait_for_file(gates / "ready-k-a")
    out = _remote(server, tmp_path, "executions", "cancel", started["executionId"])
    assert out.strip() == "cancelled"
    assert client.execution(started["executionId"])["status"] == "cancelled"

    go = tmp_path / "cli_go.yaml"
    go.write_text(
        "apiVersion: whenflow/v1\nkind: Pipeline\n"
        "metadata: {name: cli_waits_for_go, version: 1.0.0}\n"
        "spec:\n  nodes:\n    - id: go\n      startWhen: event:external.go\n"
        "      task: {type: noop}\n"
    )
    _remote(server, tmp_path, "pipelines", "push", go, "--publish")
    started = _remote_json(server, tmp_path, "start", "cli_waits_for_go")
    assert isinstance(started, dict)
    sent = _remote(server, tmp_path, "events", "send", started["executionId"], "go", "-p", "n=7")
    assert sent.strip() == "external.go: published"
    ended = client.wait(started["executionId"], timeout=60)
    assert ended["status"] == "completed"
    payloads = [e["payload"] for e in client.all_events(ended["executionId"])]
    assert {"n": "7"} in payloads


def test_retry_through_the_server_reruns_the_failed_node(
    server: Server, client: Client, tmp_path: Path
) -> None:
    definition = tmp_path / "cli_retry.yaml"
    definition.write_text(
        "apiVersion: whenflow/v1\nkind: Pipeline\n"
        "metadata: {name: cli_retry, version: 1.0.0}\n"
        "spec:\n  nodes:\n    - id: flaky\n"
        '      task: {type: python, callable: "servertasks:fail_once"}\n'
        f'      inputBindings: {{folder: "{tmp_path}", node: flaky, tag: r}}\n'
    )
    _remote(server, tmp_path, "pipelines", "push", definition, "--publish")
    failed = run_cli(tmp_path, "--server", server.url, "start", "cli_retry", "--wait")
    assert failed.returncode == 1, failed.stderr
    assert "failed" in failed.stdout
    first_id = failed.stdout.split()[1].rstrip(":")
    retried = _remote_json(server, tmp_path, "executions", "retry", first_id)
    assert isinstance(retried, dict)
    assert retried["retryOf"] == first_id
    ended = client.wait(retried["executionId"], timeout=60)
    assert ended["status"] == "completed"
    assert ended["nodes"]["flaky"]["outputs"]["value"] == 3


def test_errors_against_a_server_are_one_line(server: Server, tmp_path: Path) -> None:
    unknown = run_cli(tmp_path, "--server", server.url, "executions", "show", "no-such-id")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: 404 not_found: ")
    assert len(unknown.stderr.strip().splitlines()) == 1
    by_env = run_cli(tmp_path, "start", "no_such_pipeline", env={"WHENFLOW_SERVER": server.url})
    assert by_env.returncode == 1
    assert by_env.stderr.startswith("error: 404 not_found: ")
    bad_input = run_cli(tmp_path, "--server", server.url, "start", "x", "-i", "no-equals")
    assert bad_input.returncode == 2
    unreachable = run_cli(tmp_path, "--server", "http://127.0.0.1:1", "executions", "list")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: cannot reach the server at http://127.0.0.1:1")
    assert "Traceback" not in unreachable.stderr
    no_server = run_cli(tmp_path, "executions", "retry", "some-id")
    assert no_server.returncode == 2
    assert "needs a server: pass --server URL" in no_server.stderr


def test_a_server_with_tokens_needs_the_token(tmp_path: Path) -> None:
    token = run_json(tmp_path, "tokens", "create", "--role", "admin")["token"]
    with running_server(tmp_path) as guarded:
        refused = run_cli(tmp_path, "--server", guarded.url, "pipelines", "list")
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: 401 ")
        allowed = run_cli(tmp_path, "--server", guarded.url, "--token", token, "pipelines", "list")
        assert allowed.returncode == 0, allowed.stderr
        by_env = run_cli(
            tmp_path, "pipelines", "list", "--json",
            env={"WHENFLOW_SERVER": guarded.url, "WHENFLOW_TOKEN": token},
        )  # fmt: skip
        assert json.loads(by_env.stdout) == {"items": []}


def test_the_registry_and_start_work_embedded_without_a_server(tmp_path: Path) -> None:
    definition = tmp_path / "embedded.yaml"
    definition.write_text(
        "apiVersion: whenflow/v1\nkind: Pipeline\n"
        "metadata: {name: embedded_echo, version: 1.2.0}\n"
        "spec:\n  inputs:\n    who: {type: string}\n    n: {type: integer, default: 1}\n  nodes:\n    - id: hello\n"
        "      task: {type: noop}\n      inputBindings: {who: '{{ pipeline.input.who }}'}\n"
    )
    pushed = run_json(tmp_path, "pipelines", "push", definition)
    assert pushed["status"] == "draft"
    published = run_json(tmp_path, "pipelines", "publish", "embedded_echo", "1.2.0")
    assert published["status"] == "published"
    listed = run_json(tmp_path, "pipelines", "list")
    assert [(p["name"], p["version"], p["status"]) for p in listed["items"]] == [
        ("embedded_echo", "1.2.0", "published")
    ]
    shown = run_cli(tmp_path, "pipelines", "show", "embedded_echo", "--version", "1.2.0")
    assert shown.stdout == definition.read_text()
    ended = run_json(tmp_path, "start", "embedded_echo", "-i", "who=ada")
    assert ended["status"] == "completed"
    assert ended["pipeline"] == "embedded_echo"
    assert run_json(tmp_path, "executions", "show", ended["executionId"]) == ended
    wrong = run_cli(tmp_path, "start", "embedded_echo", "-i", "who=ada", "-i", "n=many")
    assert wrong.returncode == 2
    assert "'n'" in wrong.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: whenflow/v1\nkind: Pipeline\nmetadata: [\n")
    refused = run_cli(tmp_path, "pipelines", "push", bad)
    assert refused.returncode == 2
    assert re.match(r"^<pushed>:\d+:\d+: ", refused.stderr), refused.stderr
    assert "Traceback" not in refused.stderr


STOPPABLE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: stoppable, version: 1.0.0}
spec:
  nodes:
    - id: review
      task: {type: approval, message: "Go on?", approvers: [alice]}
    - id: after_stop
      startWhen: event:review.stopped
      task: {type: noop}
"""


def test_nodes_stop_reaches_an_embedded_run_through_its_inbox(tmp_path: Path) -> None:
    from test_approvals_cli import waiting_run

    pipeline = tmp_path / "stoppable.yaml"
    pipeline.write_text(STOPPABLE)
    with waiting_run(tmp_path, pipeline, message="Go on?") as (proc, execution_id):
        stopped = run_json(tmp_path, "nodes", "stop", execution_id[:8], "review")
        assert (stopped["applied"], stopped["refusal"]) == (True, None)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    shown = run_json(tmp_path, "executions", "show", execution_id)
    assert shown["nodes"]["review"]["status"] == "stopped"
    assert shown["nodes"]["after_stop"]["status"] == "completed"
    late = run_cli(tmp_path, "nodes", "stop", execution_id, "review")
    assert late.returncode == 1
    assert late.stderr.startswith("error: ")
