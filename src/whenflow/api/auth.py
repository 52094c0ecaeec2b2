"""Bearer-token auth for the API routes (DESIGN.md §10, §11).

Every route but `/health` depends on `require(role)`:
`@router.get(..., dependencies=[Depends(require(Role.VIEWER))])`. Nothing is
exempted by path: a route without that dependency is open, every other one
asks for a token, whatever its path ends with (`/x/health` is not `/health`).

The contract with the app:

- `request.app.state.tokens` holds the token authority: a
  `services.tokens.TokenService` (anything with the `TokenAuthority`
  methods). A request whose app has none is refused with 503, never admitted.
- `install_auth_errors(app)` makes refusals the API's error shape (DESIGN.md
  §9): `{"error": {"code", "message", "details"}}` with 401 and
  `WWW-Authenticate: Bearer` for a missing or unknown token, 403 for a role
  too low, 503 when the tokens cannot be read. Without it they are still
  401/403/503, in FastAPI's `{"detail": ...}` shape.

A server with no active token at all (none created, or all revoked) is in
loopback mode: `services.bind_policy.check_server_bind` lets it listen on
loopback only, and every request without an `Authorization` header from a
loopback client address is admitted as admin. A request from any other
address, or one that a proxy forwarded (`Forwarded`, `X-Forwarded-For`,
`X-Real-IP`: a proxy on the same machine connects from loopback), or one a
browser sent for another site (a `Host` that is not loopback, or an `Origin`
that is not the server itself: a web page posting to the server, or reading
it through DNS rebinding), is
refused even then (a token created or revoked while it runs
changes the mode within a second: `TokenService.HAS_TOKENS_TTL_S`). A request
that does send a token is always checked, in either mode.

On success the caller's role is in `request.state.role`, and the name of
its token (when it has one) in `request.state.principal`. The OpenAPI
document states each route's role (its security requirement), and
`unguarded_routes(app)` lists the routes that state none besides `/health`:
a test of the whole app keeps that list empty.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from whenflow.domain.auth import Role
from whenflow.domain.errors import StoreError
from whenflow.services.bind_policy import is_loopback

BEARER_NAME = "bearerToken"
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name=BEARER_NAME,
    description="A token from `whenflow tokens create --role viewer|operator|admin`.",
)
"""Declares the scheme in the OpenAPI document; `require` reads the header itself."""


class TokenAuthority(Protocol):
    """What `require` asks of `app.state.tokens` (TokenService is one)."""

    async def caller(self, token: str) -> tuple[Role, str] | None: ...

    async def has_tokens(self) -> bool: ...


class AuthFailed(HTTPException):
    """A request refused by `require`: 401, 403 or 503, with the API's error fields."""

    def __init__(self, status_code: int, code: str, message: str, **details: Any) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
        super().__init__(status_code, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


async def auth_failed_response(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler `install_auth_errors` registers for AuthFailed."""
    assert isinstance(exc, AuthFailed)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def install_auth_errors(app: FastAPI) -> None:
    """Answer refused requests with `{"error": {"code", "message", "details"}}`."""
    app.add_exception_handler(AuthFailed, auth_failed_response)


def require(role: Role) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency admitting requests whose token holds `role` or higher.

    The OpenAPI document lists the role as the route's security requirement
    (`{"bearerToken": ["operator"]}`: OpenAPI 3.1's role names).

    Raises (as responses):
        AuthFailed 401: no token (outside loopback mode), a malformed header,
            or a token that is unknown or revoked.
        AuthFailed 403: the token's role is below `role`.
        AuthFailed 503: no token authority on the app, or its store is unreadable.
    """

    async def dependency(
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(  # noqa: B008
            BEARER, scopes=[role.value]
        ),
    ) -> None:
        request.state.role = await _caller_role(request, role)

    dependency.__name__ = f"require_{role.value}"
    return dependency


EXEMPT_PATHS = frozenset({"/health"})
"""The routes open to anyone, by exact path (DESIGN.md §10)."""


def route_roles(app: FastAPI) -> dict[tuple[str, str], Role | None]:
    """Every documented route as (METHOD, path) → the role it requires (None: none).

    Read from the app's OpenAPI document (built afresh, not the cached one),
    where `require` states each route's role, whether it was declared on the
    route, its router or a nested dependency. Paths are as OpenAPI writes them
    (`{name}`, without a `:path` converter).
    """
    found: dict[tuple[str, str], Role | None] = {}
    document = get_openapi(title=app.title, version=app.version, routes=app.routes)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            names = [n for r in operation.get("security", []) for n in r.get(BEARER_NAME, [])]
            roles = [Role(n) for n in names if n in Role.__members__.values()]
            found[(method.upper(), path)] = max(roles, key=lambda r: r.rank) if roles else None
    return found


def unguarded_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Routes that require no role and are not in EXEMPT_PATHS: a test keeps it empty.

    Only routes in the OpenAPI document are seen: keep `include_in_schema` on.
    """
    return sorted(
        key for key, role in route_roles(app).items() if role is None and key[1] not in EXEMPT_PATHS
    )


async def _caller_role(request: Request, needed: Role) -> Role:
    tokens: TokenAuthority | None = getattr(request.app.state, "tokens", None)
    if tokens is None:
        raise AuthFailed(503, "unavailable", "the server has no token store configured")
    header = request.headers.get("authorization")
    try:
        if header is None:
            guarded = await tokens.has_tokens()
            if not guarded and _from_loopback(request):
                return Role.ADMIN
            raise AuthFailed(401, "unauthenticated", _missing_message(guarded))
        token = _bearer_token(header)
        caller = await tokens.caller(token)
    except StoreError as exc:
        raise AuthFailed(503, "unavailable", f"cannot check the token now: {exc}") from exc
    if caller is None:
        raise AuthFailed(
            401, "unauthenticated", "the token is unknown or revoked; ask an admin for a new one"
        )
    found, name = caller
    if name:
        request.state.principal = name
    if not found.allows(needed):
        raise AuthFailed(
            403,
            "forbidden",
            f"this needs the {needed.value} role; the token holds {found.value}",
            needed=needed.value,
            role=found.value,
        )
    return found


def _bearer_token(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthFailed(
            401, "unauthenticated", "send the token as `Authorization: Bearer <token>`"
        )
    return token


PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
"""A request carrying one of these came through a proxy: its client is not the peer."""


def _from_loopback(request: Request) -> bool:
    """Whether the peer is loopback, no proxy says it forwarded the request, and no
    browser sent it for another site (its `Origin` and `Host` name this machine)."""
    if any(name in request.headers for name in PROXY_HEADERS):
        return False
    host = request.headers.get("host", "")
    if host and not is_loopback(_split(f"//{host}")[1]):
        return False
    origin = request.headers.get("origin")
    if origin is not None and _split(origin)[0] != host.lower():
        return False  # a page of another site (another port of this machine included)
    return request.client is not None and is_loopback(request.client.host)


def _split(url: str) -> tuple[str, str]:
    """(netloc, hostname) of `url`, lowercase; empty strings for what is not a URL."""
    try:
        parts = urlsplit(url)
        return parts.netloc.lower(), parts.hostname or ""
    except ValueError:
        return "", ""


def _missing_message(has_tokens: bool) -> str:
    if has_tokens:
        return "this needs a token: send `Authorization: Bearer <token>`"
    return (
        "this server has no API token yet and admits requests from its own machine only; "
        "create one with `whenflow tokens create --role admin` and send it as "
        "`Authorization: Bearer <token>`"
    )
