"""Auth on a real `whenflow server` (DESIGN.md §10, §11): every route × every role.

The routes and the role each needs come from the server's own `/openapi.json`,
so a route added later is in the matrix without a change here. Each route is
called with made-up ids: what matters is whether the request got past auth
(401 anonymous, 403 a role too low, anything else once admitted).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli, run_json
from server_helpers import Server, running_server

pytestmark = pytest.mark.slow

RANK = {"viewer": 0, "operator": 1, "admin": 2}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    home = tmp_path_factory.mktemp("auth-home")
    tokens = {role: run_json(home, "tokens", "create", "--role", role)["token"] for role in RANK}
    with running_server(home) as server:
        yield server, tokens


def _call(server: Server, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if path.endswith("/stream"):  # a live stream: its status line is all we need
        with server.client.stream(method, path, headers=headers) as response:
            return response.status_code
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
    return server.client.request(method, path, headers=headers, json=body).status_code


def _routes(server: Server, admin: str) -> list[tuple[str, str, str | None]]:
    """(method, path with ids filled in, role needed or None) from /openapi.json."""
    document = server.client.get(
        "/openapi.json", headers={"Authorization": f"Bearer {admin}"}
    ).json()
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            needs = [r for req in operation.get("security", []) for r in req.get("bearerToken", [])]
            filled = re.sub(r"\{[^}]+\}", "x", path)
            found.append((method.upper(), filled, needs[0] if needs else None))
    return found


def test_every_route_admits_exactly_the_roles_it_needs(
    guarded: tuple[Server, dict[str, str]],
) -> None:
    server, tokens = guarded
    routes = _routes(server, tokens["admin"])
    paths = {path for _, path, _ in routes}
    assert {"/metrics", "/stats", "/ready", "/api/v1/events/stream"} <= paths
    assert "/api/v1/executions/x/events/stream" in paths
    unguarded = [(m, p) for m, p, role in routes if role is None]
    # The webhook's key in its path is its credential (a sender cannot send a token).
    assert sorted(unguarded) == [("GET", "/health"), ("POST", "/api/v1/hooks/x")]

    wrong = []
    for method, path, role in routes:
        if role is None:
            continue
        callers: dict[str, str | None] = {"anonymous": None, **tokens}
        for caller, token in callers.items():
            status = _call(server, method, path, token)
            if caller == "anonymous":
                expected = "401"
            elif RANK[caller] < RANK[role]:
                expected = "403"
            else:
                expected = "admitted"
            got = str(status) if status in (401, 403) else "admitted"
            if got != expected:
                wrong.append((method, path, caller, status, expected))
    assert wrong == []


def test_health_is_exempt_by_its_exact_path_only(guarded: tuple[Server, dict[str, str]]) -> None:
    server, _ = guarded
    assert server.client.get("/health").status_code == 200
    for trick in (
        "/api/v1/executions/x/health",
        "/api/v1/executions/%2e%2e/health",
        "//health",
        "/health/../api/v1/executions",
    ):
        response = server.client.get(trick)
        assert response.status_code in (401, 404), (trick, response.status_code)


def test_metrics_and_stats_count_what_the_server_ran(
    guarded: tuple[Server, dict[str, str]],
) -> None:
    server, tokens = guarded
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    operator = {"Authorization": f"Bearer {tokens['operator']}"}
    pipeline = (
        "apiVersion: whenflow/v1\nkind: Pipeline\nmetadata: {name: counted, version: 1.0.0}\n"
        "spec:\n  nodes:\n    - {id: only, task: {type: noop}}\n"
    )
    pushed = server.client.post(
        "/api/v1/pipelines",
        params={"publish": "true"},
        content=pipeline.encode(),
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert pushed.status_code == 201, pushed.text
    started = server.client.post("/api/v1/pipelines/counted/start", json={}, headers=operator)
    assert started.status_code == 201, started.text
    execution_id = started.json()["executionId"]
    stream = f"/api/v1/executions/{execution_id}/events/stream"
    with server.client.stream("GET", stream, headers=admin) as response:
        for _ in response.iter_lines():
            pass
    metrics = server.client.get("/metrics", headers=admin).text
    finished = re.search(
        r'^whenflow_executions_finished_total\{[^}]*pipeline="counted"[^}]*status="completed"[^}]*\} (\S+)$',
        metrics,
        re.M,
    )
    assert finished is not None, metrics
    assert float(finished.group(1)) == 1.0
    stats = server.client.get("/stats", headers={"Authorization": f"Bearer {tokens['viewer']}"})
    assert stats.status_code == 200
    assert stats.json()["process"]["rssBytes"] > 0


def test_a_server_without_tokens_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    refused = run_cli(tmp_path, "server", "--host", "0.0.0.0", "--port", "1")
    assert refused.returncode == 2
    assert "refusing to listen on '0.0.0.0'" in refused.stderr
    assert "whenflow tokens create --role admin" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_loopback_without_tokens_admits_local_requests(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        assert server.client.get("/api/v1/executions").status_code == 200
        forwarded = server.client.get(
            "/api/v1/executions", headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert forwarded.status_code == 401
