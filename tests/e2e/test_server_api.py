"""`whenflow server` end to end: a real server subprocess on a loopback port, driven
over HTTP (the registry, starts with the seed request, the live stream, approvals,
cancel, node stop, events, idempotency, and bad input)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_helpers import EXAMPLES, REPO_ROOT, cli_argv, cli_env, run_cli
from server_helpers import (
    FEATURES_SEED,
    Server,
    follow_to_end,
    gate_pipeline,
    push,
    push_examples,
    running_server,
    sse,
    start,
    wait_for_file,
    wait_status,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("server-home")
    with running_server(home) as running:
        push_examples(running.client)
        yield running


@pytest.fixture
def client(server: Server) -> httpx.Client:
    return server.client


def test_the_seed_request_starts_feature_engineering_and_the_stream_follows_it(
    client: httpx.Client,
) -> None:
    response = client.post(
        "/api/v1/pipelines/feature_engineering/start",
        content=json.dumps(FEATURES_SEED).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    started = response.json()
    execution_id = started["executionId"]
    assert started["url"] == f"/api/v1/executions/{execution_id}"
    assert started["status"] in ("running", "completed")

    streamed = follow_to_end(client, execution_id)
    assert streamed[-1]["eventType"] == "pipeline.completed"
    assert [e["seq"] for e in streamed] == list(range(1, len(streamed) + 1))

    shown = client.get(f"/api/v1/executions/{execution_id}").json()
    assert shown["status"] == "completed"
    assert shown["executionId"] == execution_id
    assert shown["nodes"]["extract_data"]["outputs"]["row_count"] == 31
    assert shown["nodes"]["notify_empty"]["status"] == "skipped"
    assert (
        shown["outputs"]["quality"] == shown["nodes"]["transform_data"]["outputs"]["quality_score"]
    )

    logged = client.get(f"/api/v1/executions/{execution_id}/events").json()["items"]
    assert logged == streamed
    assert [e["eventType"] for e in logged] == shown["events"]
    later = client.get(f"/api/v1/executions/{execution_id}/events", params={"since": 3}).json()
    assert [e["seq"] for e in later["items"]] == [e["seq"] for e in streamed[3:]]
    assert later["nextSince"] is None
    first_page = client.get(f"/api/v1/executions/{execution_id}/events", params={"limit": 2}).json()
    assert [e["seq"] for e in first_page["items"]] == [1, 2]
    assert first_page["nextSince"] == 2

    variables = client.get(f"/api/v1/executions/{execution_id}/variables").json()["items"]
    found = {(v["scope"], v["name"]): v["value"] for v in variables}
    assert found[("pipeline.input", "start_date")] == "2025-01-01"
    assert found[("extract_data", "row_count")] == 31

    # A reconnecting client (Last-Event-ID) gets what follows that seq only.
    resumed = [
        data
        for _, _, data in sse(client, f"/api/v1/executions/{execution_id}/events/stream", since=0)
    ]
    assert resumed == streamed
    with client.stream(
        "GET",
        f"/api/v1/executions/{execution_id}/events/stream",
        headers={"Last-Event-ID": str(streamed[-2]["seq"])},
    ) as tail:
        text = tail.read().decode()
    assert f"id: {streamed[-1]['seq']}" in text
    assert f"id: {streamed[-2]['seq']}\n" not in text


def test_the_registry_lists_and_reads_versions(client: httpx.Client) -> None:
    listed = client.get("/api/v1/pipelines").json()["items"]
    assert {(p["name"], p["status"]) for p in listed} >= {
        ("feature_engineering", "published"),
        ("approval_gate", "published"),
    }
    versions = client.get("/api/v1/pipelines/feature_engineering").json()["versions"]
    assert [v["version"] for v in versions] == ["1.0.0"]
    one = client.get("/api/v1/pipelines/feature_engineering/versions/1.0.0").json()
    assert one["yaml"] == (EXAMPLES / "feature_engineering.yaml").read_text()
    task = client.get("/api/v1/tasks/transform/versions/1.2.0").json()
    assert task["kind"] == "task"
    assert task["status"] == "published"
    assert client.get("/openapi.json").json()["paths"]["/api/v1/pipelines/{name}/start"]
    assert client.get("/docs").status_code == 200


def test_a_draft_is_published_later_and_a_changed_published_version_conflicts(
    client: httpx.Client,
) -> None:
    text = (EXAMPLES / "branch_and_join.yaml").read_text()
    drafted = client.post(
        "/api/v1/pipelines", content=text, headers={"Content-Type": "application/yaml"}
    )
    assert drafted.status_code == 201
    assert drafted.json()["status"] == "draft"
    name, version = drafted.json()["name"], drafted.json()["version"]
    refused = client.post(f"/api/v1/pipelines/{name}/start", json={"version": version})
    assert refused.status_code == 404
    assert "draft" in refused.json()["error"]["message"]
    published = client.post(f"/api/v1/pipelines/{name}/versions/{version}/publish")
    assert published.status_code == 200
    assert published.json()["status"] == "published"
    changed = client.post(
        "/api/v1/pipelines",
        content=text.replace("description:", "description: changed", 1),
        headers={"Content-Type": "application/yaml"},
    )
    assert changed.status_code == 409
    assert client.delete(f"/api/v1/pipelines/{name}/versions/{version}").status_code == 409


@pytest.mark.parametrize(
    ("decision", "ran", "skipped"),
    [("approve", "ship", "roll_back"), ("reject", "roll_back", "ship")],
)
def test_an_approval_decided_through_the_api_runs_its_branch(
    client: httpx.Client, decision: str, ran: str, skipped: str
) -> None:
    execution_id = start(client, "approval_gate")
    wait_status(client, execution_id, "waiting")
    pending = client.get("/api/v1/approvals", params={"status": "pending"}).json()["items"]
    mine = [p for p in pending if p["executionId"] == execution_id]
    assert [(p["nodeId"], p["message"], p["approvers"]) for p in mine] == [
        ("review", "Ship app-1.4.2.tar.gz to production?", ["alice", "bob"])
    ]
    path = f"/api/v1/executions/{execution_id}/nodes/review/{decision}"
    decided = client.post(path, json={"comment": "looked at it", "by": "alice"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["applied"] is True
    again = client.post(path, json={"comment": "twice", "by": "bob"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"

    shown = wait_status(client, execution_id, "completed")
    assert shown["nodes"][ran]["status"] == "completed"
    assert shown["nodes"][skipped]["status"] == "skipped"
    assert shown["nodes"]["review"]["outputs"]["comment"] == "looked at it"
    pending = client.get("/api/v1/approvals").json()["items"]
    assert execution_id not in {p["executionId"] for p in pending}


def test_cancel_ends_a_running_execution(client: httpx.Client, tmp_path: Path) -> None:
    push(client, gate_pipeline("cancelled_gate", tmp_path))
    execution_id = start(client, "cancelled_gate", {"inputVariables": {"tag": "t"}})
    wait_for_file(tmp_path / "ready-t-a")
    cancelled = client.post(f"/api/v1/executions/{execution_id}/cancel", json={"reason": "enough"})
    assert cancelled.status_code == 200, cancelled.text
    # The 200 came after the flush barrier: the cancel is durable and visible at once.
    shown = client.get(f"/api/v1/executions/{execution_id}").json()
    assert shown["status"] == "cancelled"
    assert shown["nodes"]["a"]["status"] == "cancelled"
    assert "b" not in shown["nodes"] or shown["nodes"]["b"]["status"] == "cancelled"
    assert client.post(f"/api/v1/executions/{execution_id}/cancel").status_code == 409


def test_stopping_one_node_lets_the_pipeline_go_on(client: httpx.Client, tmp_path: Path) -> None:
    tail = """    - id: after_stop
      startWhen: event:a.stopped
      task: {type: noop}
"""
    push(client, gate_pipeline("stopped_gate", tmp_path, tail))
    execution_id = start(client, "stopped_gate", {"inputVariables": {"tag": "s"}})
    wait_for_file(tmp_path / "ready-s-a")
    stopped = client.post(f"/api/v1/executions/{execution_id}/nodes/a/stop", json={})
    assert stopped.status_code == 200, stopped.text
    shown = wait_status(client, execution_id, "completed")
    assert shown["nodes"]["a"]["status"] == "stopped"
    assert shown["nodes"]["after_stop"]["status"] == "completed"
    assert shown["nodes"]["b"]["status"] == "skipped"
    again = client.post(f"/api/v1/executions/{execution_id}/nodes/a/stop", json={})
    assert again.status_code == 409
    unknown = client.post(f"/api/v1/executions/{execution_id}/nodes/nope/stop", json={})
    assert unknown.status_code == 404


def test_an_event_posted_through_the_api_starts_the_node_waiting_for_it(
    client: httpx.Client,
) -> None:
    push(
        client,
        """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: waits_for_go, version: 1.0.0}
spec:
  nodes:
    - id: go
      startWhen: event:external.go
      task: {type: noop}
""",
    )
    execution_id = start(client, "waits_for_go")
    wait_status(client, execution_id, "waiting")
    sent = client.post(
        f"/api/v1/executions/{execution_id}/events", json={"name": "go", "payload": {"ticket": 42}}
    )
    assert sent.status_code == 200, sent.text
    shown = wait_status(client, execution_id, "completed")
    assert "external.go" in shown["events"]
    events = client.get(f"/api/v1/executions/{execution_id}/events").json()["items"]
    assert [e["payload"] for e in events if e["eventType"] == "external.go"] == [{"ticket": 42}]


def test_the_same_idempotency_key_returns_the_same_execution(client: httpx.Client) -> None:
    path = "/api/v1/pipelines/feature_engineering/start"
    first = client.post(path, json=FEATURES_SEED, headers={"Idempotency-Key": "seed-1"})
    assert first.status_code == 201
    again = client.post(path, json=FEATURES_SEED, headers={"Idempotency-Key": "seed-1"})
    assert again.status_code == 200
    assert again.json()["executionId"] == first.json()["executionId"]
    other = dict(FEATURES_SEED, inputVariables={"start_date": "2025-02-01", "end_date": "x"})
    conflict = client.post(path, json=other, headers={"Idempotency-Key": "seed-1"})
    assert conflict.status_code == 409
    assert first.json()["executionId"] in conflict.json()["error"]["message"]
    fresh = client.post(path, json=FEATURES_SEED, headers={"Idempotency-Key": "seed-2"})
    assert fresh.status_code == 201
    assert fresh.json()["executionId"] != first.json()["executionId"]


def test_executions_are_listed_by_filter_a_page_at_a_time(client: httpx.Client) -> None:
    ids = [start(client, "feature_engineering", FEATURES_SEED) for _ in range(3)]
    for execution_id in ids:
        wait_status(client, execution_id, "completed")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"pipeline": "feature_engineering", "status": "completed", "limit": 2}
        page = client.get(
            "/api/v1/executions", params={**params, **({"cursor": cursor} if cursor else {})}
        ).json()
        assert len(page["items"]) <= 2
        assert {i["pipeline"] for i in page["items"]} <= {"feature_engineering"}
        seen.extend(i["executionId"] for i in page["items"])
        cursor = page["cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)
    assert seen[: len(ids)] == list(reversed(ids))  # newest first
    future = client.get("/api/v1/executions", params={"createdAfter": "2999-01-01T00:00:00Z"})
    assert future.json() == {"items": [], "cursor": None}
    assert client.get("/api/v1/executions", params={"status": "sleeping"}).status_code == 422
    assert client.get("/api/v1/executions", params={"cursor": "junk"}).status_code == 400


def test_the_status_stream_shows_executions_changing_status(client: httpx.Client) -> None:
    seen: list[str] = []
    with client.stream("GET", "/api/v1/events/stream", timeout=60.0) as response:
        lines = response.iter_lines()
        assert next(lines) == ": connected"
        execution_id = start(client, "approval_gate")
        for line in lines:
            if not line.startswith("data: "):
                continue
            change = json.loads(line[6:])
            if change["executionId"] != execution_id:
                continue
            assert change["pipeline"] == "approval_gate"
            seen.append(change["status"])
            if change["status"] == "waiting":
                path = f"/api/v1/executions/{execution_id}/nodes/review/approve"
                assert client.post(path, json={"by": "alice"}).status_code == 200
            if change["status"] == "completed":
                break
    assert seen == ["running", "waiting", "running", "completed"]


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    error: dict[str, object] = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    return error


def test_bad_input_is_a_4xx_that_says_what_is_wrong(client: httpx.Client, tmp_path: Path) -> None:
    yaml_headers = {"Content-Type": "application/yaml"}
    malformed = client.post(
        "/api/v1/pipelines", content=b"kind: Pipeline\n  bad: [", headers=yaml_headers
    )
    details = _error(malformed, 422)["details"]
    assert isinstance(details, dict)
    assert (details["line"], details["column"]) == (2, 6)
    nested = b"[" * 10_000 + b"]" * 10_000
    deep_yaml = client.post("/api/v1/pipelines", content=nested, headers=yaml_headers)
    assert _error(deep_yaml, 422)["code"] == "invalid_definition"
    not_text = client.post("/api/v1/pipelines", content=b"\xff\xfe", headers=yaml_headers)
    assert _error(not_text, 400)["code"] == "invalid_encoding"
    no_code = """apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: no_code, version: 1.0.0}
spec:
  nodes:
    - id: n
      task: {type: python, callable: "no_such_module_anywhere:fn"}
"""
    missing = client.post("/api/v1/pipelines", content=no_code, headers=yaml_headers)
    missing_error = _error(missing, 422)
    assert "no_such_module_anywhere" in str(missing_error["message"])
    assert isinstance(missing_error["details"], dict)
    assert missing_error["details"]["line"] == 7

    push(
        client,
        """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: typed_inputs, version: 1.0.0}
spec:
  inputs:
    count: {type: integer, required: true}
  nodes:
    - id: n
      task: {type: noop}
""",
    )
    wrong = client.post(
        "/api/v1/pipelines/typed_inputs/start", json={"inputVariables": {"count": "many"}}
    )
    error = _error(wrong, 422)
    assert error["details"] == {"path": ["inputVariables", "count"]}
    assert "count" in str(error["message"])
    missing = client.post("/api/v1/pipelines/typed_inputs/start", json={})
    assert _error(missing, 422)["details"] == {"path": ["inputVariables", "count"]}
    extra = client.post("/api/v1/pipelines/typed_inputs/start", json={"inputs": {}})
    assert _error(extra, 422)["code"] == "invalid_request"
    not_json = client.post("/api/v1/pipelines/typed_inputs/start", content=b"{nope")
    assert _error(not_json, 400)["code"] == "invalid_json"

    assert _error(client.get("/api/v1/executions/no-such-id"), 404)["code"] == "not_found"
    _error(client.get("/api/v1/pipelines/no_such_pipeline"), 404)
    _error(client.get("/api/v1/pipelines/feature_engineering/versions/9.9.9"), 404)
    _error(client.post("/api/v1/pipelines/no_such_pipeline/start", json={}), 404)
    _error(
        client.post("/api/v1/pipelines/feature_engineering/start", json={"version": "9.9.9"}), 404
    )
    _error(client.get("/api/v1/executions/no-such-id/events/stream"), 404)
    _error(client.post("/api/v1/executions/no-such-id/cancel"), 404)
    done = start(client, "feature_engineering", FEATURES_SEED)
    wait_status(client, done, "completed")
    _error(client.get(f"/api/v1/executions/{done}/nodes/no_such_node/logs"), 404)
    _error(client.post(f"/api/v1/executions/{done}/nodes/no_such_node/approve", json={}), 404)

    huge = client.post("/api/v1/pipelines/typed_inputs/start", content=b"x" * (20 * 1024 * 1024))
    assert _error(huge, 413)["code"] == "body_too_large"
    deep = client.post(
        "/api/v1/pipelines/typed_inputs/start", content=b"[" * 10_000 + b"]" * 10_000
    )
    assert 400 <= deep.status_code < 500
    assert deep.json()["error"]["code"] == "too_deep"
    wide = {"inputVariables": {f"k{i}": i for i in range(100_000)}}
    many = client.post("/api/v1/pipelines/typed_inputs/start", content=json.dumps(wide).encode())
    assert 400 <= many.status_code < 500
    assert many.json()["error"]["code"] == "too_large"
    assert client.get("/health").status_code == 200  # still serving


def test_retry_reuses_completed_nodes_and_runs_the_failed_one_again(
    client: httpx.Client, tmp_path: Path
) -> None:
    gate = '{type: python, callable: "servertasks:gate"}'
    push(
        client,
        f"""
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: fails_once, version: 1.0.0}}
spec:
  nodes:
    - id: one
      task: {gate}
      inputBindings: {{folder: "{tmp_path}", node: one, wait: false}}
    - id: two
      startWhen: event:one.completed
      task: {gate}
      inputBindings: {{folder: "{tmp_path}", node: two, wait: false}}
    - id: three
      startWhen: event:two.completed
      task: {{type: python, callable: "servertasks:fail_once"}}
      inputBindings: {{folder: "{tmp_path}", node: three}}
    - id: after_three
      startWhen: event:three.completed
      task: {{type: noop}}
  outputs:
    value: "{{{{ three.value }}}}"
""",
    )
    failed_id = start(client, "fails_once")
    failed = wait_status(client, failed_id, "failed")
    assert failed["nodes"]["three"]["status"] == "failed"
    assert failed["retryOf"] is None

    retried = client.post(f"/api/v1/executions/{failed_id}/retry")
    assert retried.status_code == 201, retried.text
    retry_id = retried.json()["executionId"]
    assert retry_id != failed_id
    shown = wait_status(client, retry_id, "completed")
    assert shown["retryOf"] == failed_id
    assert shown["outputs"] == {"value": 3}
    assert shown["nodes"]["one"]["outputs"] == {"node": "one"}  # kept from the first run
    assert shown["nodes"]["after_three"]["status"] == "completed"
    events = client.get(f"/api/v1/executions/{retry_id}/events").json()["items"]
    started = [e["eventType"] for e in events if e["eventType"].endswith(".started")]
    resumed = next(e["seq"] for e in events if e["eventType"] == "pipeline.resumed")
    assert [
        e["eventType"] for e in events if e["seq"] > resumed and e["eventType"].endswith(".started")
    ] == [
        "three.started",
        "after_three.started",
    ]
    assert started.count("one.started") == 1  # replayed from the first run, not run again
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [" one", " two", " three", " three"]
    again = client.post(f"/api/v1/executions/{retry_id}/retry")
    assert again.status_code == 409  # it completed: nothing to retry
    assert client.post("/api/v1/executions/no-such-id/retry").status_code == 404


def test_many_executions_wait_at_once_and_other_processes_still_use_the_inbox(
    server: Server,
) -> None:
    client = server.client
    ids = [start(client, "approval_gate") for _ in range(20)]
    for execution_id in ids:
        wait_status(client, execution_id, "waiting")
    pending = {p["executionId"] for p in client.get("/api/v1/approvals").json()["items"]}
    assert set(ids) <= pending
    # One decision from another process (the CLI posts to the inbox; the server's one
    # inbox reader hands it to the dispatcher), the others through the API.
    by_cli = run_cli(server.home, "approve", ids[0], "review", "--by", "bob", "-m", "from the CLI")
    assert by_cli.returncode == 0, by_cli.stderr
    for execution_id in ids[1:]:
        path = f"/api/v1/executions/{execution_id}/nodes/review/reject"
        assert client.post(path, json={"by": "alice"}).status_code == 200
    shown = wait_status(client, ids[0], "completed")
    assert shown["nodes"]["review"]["outputs"]["by"] == "bob"
    assert shown["nodes"]["ship"]["status"] == "completed"
    for execution_id in ids[1:]:
        assert wait_status(client, execution_id, "completed")["outputs"]["decision"] == "rejected"


def test_an_execution_another_process_runs_is_followed_and_decided_through_the_api(
    server: Server, tmp_path: Path
) -> None:
    client = server.client
    gate = tmp_path / "cli_gate.yaml"
    gate.write_text(
        (EXAMPLES / "approval_gate.yaml").read_text().replace("approval_gate", "cli_gate")
    )
    argv = cli_argv("run", str(gate), "--json")
    with subprocess.Popen(
        argv, cwd=REPO_ROOT, env=cli_env(server.home), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    ) as run:  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            page = client.get("/api/v1/executions", params={"pipeline": "cli_gate"}).json()
            if page["items"] and page["items"][0]["status"] == "waiting":
                break
            assert time.monotonic() < deadline, "the CLI run never waited"
            time.sleep(0.05)  # the poll interval of a status read through the API
        execution_id = page["items"][0]["executionId"]
        decided = client.post(
            f"/api/v1/executions/{execution_id}/nodes/review/approve", json={"by": "alice"}
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["applied"] is True  # applied by the CLI process's own reader
        streamed = follow_to_end(client, execution_id)
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert json.loads(out)["executionId"] == execution_id
    assert streamed[-1]["eventType"] == "pipeline.completed"
    assert "ship.completed" in [e["eventType"] for e in streamed]
