"""`whenflow.Client` and `whenflow.AsyncClient` against a real `whenflow server`
subprocess: the registry, starts with inputs, waiting on the live stream, reads,
approvals, cancel, node stop, events, idempotency, errors and token auth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import EXAMPLES, run_json
from server_helpers import (
    FEATURES_SEED,
    Server,
    gate_pipeline,
    running_server,
    wait_for_file,
)

import whenflow
from whenflow import ApiError, AsyncClient, Client

pytestmark = pytest.mark.slow

SEED_INPUTS = FEATURES_SEED["inputVariables"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("client-home")
    with running_server(home) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as opened:
        opened.push((EXAMPLES / "tasks" / "transform.yaml").read_text(), publish=True, kind="tasks")
        opened.push((EXAMPLES / "approval_gate.yaml").read_text(), publish=True)
        yield opened


def test_the_package_exports_the_client_lazily() -> None:
    assert whenflow.Client is Client
    assert whenflow.AsyncClient is AsyncClient
    assert issubclass(whenflow.ApiError, Exception)
    assert {"Client", "AsyncClient", "ApiError"} <= set(whenflow.__all__)


def test_push_publish_start_wait_and_read_feature_engineering(client: Client) -> None:
    drafted = client.push((EXAMPLES / "feature_engineering.yaml").read_text())
    assert (drafted["name"], drafted["version"], drafted["status"]) == (
        "feature_engineering",
        "1.0.0",
        "draft",
    )
    published = client.publish("feature_engineering", "1.0.0")
    assert published["status"] == "published"
    listed = {p["name"]: p["status"] for p in client.pipelines()["items"]}
    assert listed["feature_engineering"] == "published"
    versions = client.pipeline("feature_engineering")["versions"]
    assert [v["version"] for v in versions] == ["1.0.0"]
    one = client.pipeline("feature_engineering", "1.0.0")
    assert one["yaml"] == (EXAMPLES / "feature_engineering.yaml").read_text()

    started = client.start("feature_engineering", SEED_INPUTS, version="1.0.0")
    execution_id = started["executionId"]
    assert started["url"] == f"/api/v1/executions/{execution_id}"
    ended = client.wait(execution_id, timeout=120)
    assert ended["status"] == "completed"
    assert ended["nodes"]["extract_data"]["outputs"]["row_count"] == 31
    assert (
        ended["outputs"]["quality"] == ended["nodes"]["transform_data"]["outputs"]["quality_score"]
    )

    events = client.all_events(execution_id)
    assert [e["eventType"] for e in events] == ended["events"]
    assert events[-1]["eventType"] == "pipeline.completed"
    page = client.events(execution_id, since=0, limit=2)
    assert [e["seq"] for e in page["items"]] == [1, 2]
    assert page["nextSince"] == 2
    assert list(client.stream(execution_id, since=len(events) - 1)) == events[-1:]

    variables = client.variables(execution_id)["items"]
    found = {(v["scope"], v["name"]): v["value"] for v in variables}
    assert found[("pipeline.input", "start_date")] == "2025-01-01"
    assert found[("extract_data", "row_count")] == 31
    assert isinstance(client.logs(execution_id, "extract_data")["items"], list)
    listed_runs = client.executions(pipeline="feature_engineering", status="completed")
    assert execution_id in {e["executionId"] for e in listed_runs["items"]}


@pytest.mark.parametrize(
    ("decision", "ran", "skipped"),
    [("approve", "ship", "roll_back"), ("reject", "roll_back", "ship")],
)
def test_a_decision_through_the_client_runs_its_branch(
    client: Client, decision: str, ran: str, skipped: str
) -> None:
    execution_id = client.start("approval_gate")["executionId"]
    _wait_pending(client, execution_id)
    decide = client.approve if decision == "approve" else client.reject
    decided = decide(execution_id, "review", "looked at it", by="alice")
    assert decided["applied"] is True
    with pytest.raises(ApiError) as second:
        decide(execution_id, "review", "twice", by="bob")
    assert (second.value.status, second.value.code) == (409, "conflict")
    ended = client.wait(execution_id, timeout=120)
    assert ended["status"] == "completed"
    assert ended["nodes"][ran]["status"] == "completed"
    assert ended["nodes"][skipped]["status"] == "skipped"


def _wait_pending(client: Client, execution_id: str) -> None:
    """Follow the stream until the approval node waits (`review.waiting` is durable)."""
    for event in client.stream(execution_id, timeout=60):
        if event["eventType"] == "review.waiting":
            return
    raise AssertionError(f"{execution_id} ended without waiting for review")


def test_cancel_and_node_stop_through_the_client(client: Client, tmp_path: Path) -> None:
    cancelled_dir = tmp_path / "cancel"
    cancelled_dir.mkdir()
    client.push(gate_pipeline("client_cancel", cancelled_dir), publish=True)
    execution_id = client.start("client_cancel", {"tag": "c"})["executionId"]
    wait_for_file(cancelled_dir / "ready-c-a")
    assert client.cancel(execution_id, "enough")["applied"] is True
    ended = client.wait(execution_id, timeout=60)
    assert ended["status"] == "cancelled"
    with pytest.raises(ApiError) as again:
        client.cancel(execution_id)
    assert again.value.status == 409

    stop_dir = tmp_path / "stop"
    stop_dir.mkdir()
    tail = "    - id: after_stop\n      startWhen: event:a.stopped\n      task: {type: noop}\n"
    client.push(gate_pipeline("client_stop", stop_dir, tail), publish=True)
    execution_id = client.start("client_stop", {"tag": "s"})["executionId"]
    wait_for_file(stop_dir / "ready-s-a")
    assert client.stop_node(execution_id, "a")["applied"] is True
    ended = client.wait(execution_id, timeout=60)
    assert ended["status"] == "completed"
    assert ended["nodes"]["a"]["status"] == "stopped"
    assert ended["nodes"]["after_stop"]["status"] == "completed"


def test_an_event_sent_through_the_client_starts_its_node(client: Client) -> None:
    client.push(
        "apiVersion: whenflow/v1\nkind: Pipeline\n"
        "metadata: {name: client_waits_for_go, version: 1.0.0}\n"
        "spec:\n  nodes:\n    - id: go\n      startWhen: event:external.go\n"
        "      task: {type: noop}\n",
        publish=True,
    )
    execution_id = client.start("client_waits_for_go")["executionId"]
    assert client.send_event(execution_id, "go", {"ticket": 42})["refusal"] is None
    ended = client.wait(execution_id, timeout=60)
    assert ended["status"] == "completed"
    sent = [e for e in client.all_events(execution_id) if e["eventType"] == "external.go"]
    assert [e["payload"] for e in sent] == [{"ticket": 42}]


def test_idempotency_keys_and_error_answers(client: Client) -> None:
    first = client.start("approval_gate", idempotency_key="client-key-1")
    again = client.start("approval_gate", idempotency_key="client-key-1")
    assert again["executionId"] == first["executionId"]
    with pytest.raises(ApiError) as conflict:
        client.start("approval_gate", {"artifact": "other"}, idempotency_key="client-key-1")
    assert (conflict.value.status, conflict.value.code) == (409, "conflict")
    assert first["executionId"] in conflict.value.message
    client.cancel(first["executionId"])

    with pytest.raises(ApiError) as unknown:
        client.execution("no-such-execution")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    assert "no-such-execution" in unknown.value.message
    assert str(unknown.value).startswith("404 not_found: ")
    with pytest.raises(ApiError) as no_pipeline:
        client.start("no_such_pipeline")
    assert no_pipeline.value.status == 404
    with pytest.raises(ApiError) as bad_yaml:
        client.push("apiVersion: whenflow/v1\nkind: Pipeline\nmetadata: [\n")
    assert bad_yaml.value.status == 422
    assert bad_yaml.value.details["line"] is not None
    with pytest.raises(ApiError) as bad_input:
        client.start("approval_gate", {"artifact": {"not": "a string"}})
    assert (bad_input.value.status, bad_input.value.code) == (422, "invalid_input")
    assert bad_input.value.details["path"] == ["inputVariables", "artifact"]


async def test_the_async_client_does_the_same_calls(client: Client, server: Server) -> None:
    async with AsyncClient(server.url) as aclient:
        listed = await aclient.pipelines()
        assert "approval_gate" in {p["name"] for p in listed["items"]}
        started = await aclient.start("approval_gate", {"artifact": "async.tar.gz"})
        execution_id = started["executionId"]
        async with asyncio.timeout(60):
            async for event in aclient.stream(execution_id):
                if event["eventType"] == "review.waiting":
                    break
        pending = (await aclient.approvals())["items"]
        assert ("review", "Ship async.tar.gz to production?") in {
            (p["nodeId"], p["message"]) for p in pending if p["executionId"] == execution_id
        }
        await aclient.approve(execution_id, "review", by="bob")
        async with asyncio.timeout(120):
            ended = await aclient.wait(execution_id)
        assert ended["status"] == "completed"
        assert ended["nodes"]["ship"]["status"] == "completed"
        events = await aclient.all_events(execution_id)
        assert [e["eventType"] for e in events] == ended["events"]
        with pytest.raises(ApiError) as unknown:
            await aclient.execution("nope")
        assert unknown.value.status == 404


def test_a_server_with_tokens_refuses_a_client_without_one(tmp_path: Path) -> None:
    admin = run_json(tmp_path, "tokens", "create", "--role", "admin")["token"]
    viewer = run_json(tmp_path, "tokens", "create", "--role", "viewer")["token"]
    with running_server(tmp_path) as guarded:
        with Client(guarded.url) as anonymous, pytest.raises(ApiError) as refused:
            anonymous.pipelines()
        assert refused.value.status == 401
        with Client(guarded.url, token=viewer) as reader:
            assert reader.pipelines() == {"items": []}
            with pytest.raises(ApiError) as forbidden:
                reader.push((EXAMPLES / "approval_gate.yaml").read_text())
            assert forbidden.value.status == 403
        with Client(guarded.url, token=admin) as owner:
            assert owner.push((EXAMPLES / "approval_gate.yaml").read_text())["status"] == "draft"
