"""Bearer-token auth: every role × every route level, loopback mode, exact-path exemption."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from auth_app import PROTECTED_BODY, ROUTES, make_app, token_service
from served_app import raw_get, served

from whenflow.domain.auth import Role
from whenflow.services.tokens import TokenService


@pytest.fixture
async def tokens(tmp_path: Path) -> AsyncIterator[TokenService]:
    async with token_service(tmp_path) as service:
        yield service


def client(tokens: TokenService | None, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=make_app(tokens), client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("caller", [None, Role.VIEWER, Role.OPERATOR, Role.ADMIN])
async def test_role_matrix(tokens: TokenService, caller: Role | None) -> None:
    issued = {role: (await tokens.create(role, role.value)).token for role in Role}
    headers = bearer(issued[caller]) if caller else {}
    async with client(tokens) as http:
        for method, path, needed in ROUTES:
            response = await http.request(method, path, headers=headers)
            error = response.json().get("error")
            if caller is None:
                assert response.status_code == 401, (method, path)
                assert response.headers["www-authenticate"] == "Bearer"
                assert error["code"] == "unauthenticated"
                assert "Authorization: Bearer" in error["message"]
            elif caller.allows(needed):
                assert response.status_code == 200, (caller, method, path, response.text)
                assert response.json()["body"] == PROTECTED_BODY
            else:
                assert response.status_code == 403, (caller, method, path)
                assert error == {
                    "code": "forbidden",
                    "message": f"this needs the {needed.value} role; the token holds {caller.value}",
                    "details": {"needed": needed.value, "role": caller.value},
                }
                assert "www-authenticate" not in response.headers
        health = await http.get("/health", headers=headers)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        if caller is not None:
            seen = (await http.get("/api/v1/executions", headers=headers)).json()
            assert seen["role"] == caller.value  # the role reaches the route


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wf_not-a-token",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer two words",
        "wf_no_scheme",
    ],
)
async def test_bad_or_unknown_tokens_are_401(tokens: TokenService, header: str) -> None:
    await tokens.create(Role.ADMIN)
    async with client(tokens) as http:
        response = await http.get("/api/v1/executions", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_revoked_token_is_refused_at_once(tokens: TokenService) -> None:
    kept = await tokens.create(Role.VIEWER)
    gone = await tokens.create(Role.ADMIN)
    async with client(tokens) as http:
        assert (await http.post("/api/v1/pipelines", headers=bearer(gone.token))).status_code == 200
        await tokens.revoke(gone.stored.token_id)
        refused = await http.post("/api/v1/pipelines", headers=bearer(gone.token))
        assert refused.status_code == 401
        assert (await http.get("/api/v1/executions", headers=bearer(kept.token))).status_code == 200


async def test_no_tokens_admits_loopback_as_admin_only(tokens: TokenService) -> None:
    async with client(tokens) as http:
        for method, path, _ in ROUTES:
            response = await http.request(method, path)
            assert response.status_code == 200, (method, path)
        assert (await http.get("/api/v1/executions")).json()["role"] == "admin"
    async with client(tokens, address="203.0.113.7") as http:
        response = await http.get("/api/v1/executions")
    assert response.status_code == 401
    assert "whenflow tokens create --role admin" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", "198.51.100.4"),
        ("Forwarded", "for=198.51.100.4"),
        ("X-Real-IP", "198.51.100.4"),
    ],
)
async def test_loopback_mode_refuses_what_a_local_proxy_forwarded(
    tokens: TokenService, header: tuple[str, str]
) -> None:
    async with client(tokens) as http:
        response = await http.get("/api/v1/executions", headers=dict([header]))
    assert response.status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},  # a web page posting to the server (CSRF)
        {"Origin": "null"},  # a sandboxed page or a local file
        {"Origin": "http://localhost:3000"},  # another site of this machine
        {"Host": "evil.example:8080"},  # DNS rebinding: a page reading as if same-origin
    ],
)
async def test_loopback_mode_refuses_what_a_browser_sends_for_another_site(
    tokens: TokenService, headers: dict[str, str]
) -> None:
    async with client(tokens) as http:
        refused = await http.post("/api/v1/executions/e1/cancel", headers=headers)
        own = await http.post(
            "/api/v1/executions/e1/cancel", headers={"Origin": "http://127.0.0.1:8080"}
        )
    assert refused.status_code == 401
    assert own.status_code == 200  # the server's own /docs page


async def test_first_token_ends_loopback_mode(tokens: TokenService) -> None:
    async with client(tokens) as http:
        assert (await http.get("/api/v1/executions")).status_code == 200
        issued = await tokens.create(Role.VIEWER)
        assert (await http.get("/api/v1/executions")).status_code == 401
        assert (
            await http.get("/api/v1/executions", headers=bearer(issued.token))
        ).status_code == 200


async def test_a_sent_token_is_checked_even_in_loopback_mode(tokens: TokenService) -> None:
    async with client(tokens) as http:
        response = await http.get("/api/v1/executions", headers=bearer("wf_stale"))
    assert response.status_code == 401


async def test_an_app_without_a_token_store_admits_nobody() -> None:
    async with client(None) as http:
        response = await http.get("/api/v1/executions")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


async def test_an_unreadable_token_store_is_503_not_admitted(
    tokens: TokenService, tmp_path: Path
) -> None:
    from whenflow.storage.database import make_engine

    engine = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        broken = TokenService(engine)
        async with client(broken) as http:
            anonymous = await http.get("/api/v1/executions")
            with_token = await http.get("/api/v1/executions", headers=bearer("wf_" + "a" * 43))
    finally:
        await engine.dispose()
    assert anonymous.status_code == 503
    assert with_token.status_code == 503
    assert anonymous.json()["error"]["code"] == "unavailable"


SUFFIX_TRICKS = [
    # (request target, status): 401 where a protected route matches, 404 where none does
    ("/api/v1/executions/x/health", 401),
    ("/api/v1/executions/health", 401),
    ("/api/v1/executions?/health", 401),
    ("/api/v1/executions/%2e%2e/health", 401),
    ("//health", 404),
    ("/health/../api/v1/executions", 404),
    ("/health/%2e%2e/api/v1/executions", 404),
    ("/health/", 307),  # FastAPI redirects to /health itself, which is harmless
]


@pytest.mark.parametrize(("target", "expected"), SUFFIX_TRICKS)
async def test_health_is_exempt_by_exact_path_only(
    tokens: TokenService, target: str, expected: int
) -> None:
    """Over a real uvicorn and raw HTTP, so no client cleans the path up first."""
    await tokens.create(Role.ADMIN)
    async with served(make_app(tokens)) as (host, port):
        status, body = await raw_get(host, port, target)
        health_status, health_body = await raw_get(host, port, "/health")
    assert status == expected, (target, status, body)
    assert PROTECTED_BODY.encode() not in body
    assert health_status == 200
    assert b'"ok"' in health_body


async def test_openapi_declares_the_bearer_scheme_on_guarded_routes(tokens: TokenService) -> None:
    async with client(tokens) as http:
        document = (await http.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `whenflow tokens create --role viewer|operator|admin`.",
    }
    paths = document["paths"]
    assert paths["/api/v1/pipelines"]["post"]["security"] == [{"bearerToken": ["admin"]}]
    cancel = paths["/api/v1/executions/{execution_id}/cancel"]["post"]
    assert cancel["security"] == [{"bearerToken": ["operator"]}]
    assert "security" not in paths["/health"]["get"]


def test_every_route_but_health_requires_a_role() -> None:
    from whenflow.api.auth import route_roles, unguarded_routes

    app = make_app(None)
    assert route_roles(app) == {
        ("GET", "/health"): None,
        ("GET", "/api/v1/executions"): Role.VIEWER,
        ("GET", "/api/v1/executions/{execution_id}/{rest}"): Role.VIEWER,
        ("GET", "/api/v1/executions/{execution_id}"): Role.VIEWER,
        ("POST", "/api/v1/executions/{execution_id}/cancel"): Role.OPERATOR,
        ("POST", "/api/v1/pipelines"): Role.ADMIN,
    }
    assert unguarded_routes(app) == []

    @app.get("/api/v1/forgotten")
    async def forgotten() -> dict[str, str]:
        return {}

    @app.get("/api/v1/x/health")  # a suffix is not the exempt path
    async def suffixed() -> dict[str, str]:
        return {}

    assert unguarded_routes(app) == [("GET", "/api/v1/forgotten"), ("GET", "/api/v1/x/health")]


def test_router_level_requirements_count() -> None:
    from fastapi import APIRouter, Depends, FastAPI

    from whenflow.api.auth import require, route_roles

    router = APIRouter(dependencies=[Depends(require(Role.OPERATOR))])

    @router.post("/api/v1/things/{thing}/poke", dependencies=[Depends(require(Role.VIEWER))])
    async def poke(thing: str) -> dict[str, str]:
        return {}

    app = FastAPI()
    app.include_router(router)
    assert route_roles(app) == {("POST", "/api/v1/things/{thing}/poke"): Role.OPERATOR}
