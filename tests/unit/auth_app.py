"""A small app with one route at each role level, guarded by the real `require`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request

from whenflow.api.auth import install_auth_errors, require
from whenflow.domain.auth import Role
from whenflow.services.tokens import TokenService
from whenflow.storage.database import make_engine, upgrade

PROTECTED_BODY = "protected-content"

ROUTES = [
    # (method, path, role the route needs)
    ("GET", "/api/v1/executions", Role.VIEWER),
    ("GET", "/api/v1/executions/x", Role.VIEWER),
    ("POST", "/api/v1/executions/x/cancel", Role.OPERATOR),
    ("POST", "/api/v1/pipelines", Role.ADMIN),
]


def make_app(tokens: TokenService | None) -> FastAPI:
    app = FastAPI()
    install_auth_errors(app)
    if tokens is not None:
        app.state.tokens = tokens
    viewer = [Depends(require(Role.VIEWER))]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/executions", dependencies=viewer)
    async def executions(request: Request) -> dict[str, str]:
        return {"body": PROTECTED_BODY, "role": request.state.role.value}

    # Catches every path below an execution, `/x/health` included.
    @app.get("/api/v1/executions/{execution_id}/{rest:path}", dependencies=viewer)
    async def below(execution_id: str, rest: str) -> dict[str, str]:
        return {"body": PROTECTED_BODY, "rest": rest}

    @app.get("/api/v1/executions/{execution_id}", dependencies=viewer)
    async def one(execution_id: str) -> dict[str, str]:
        return {"body": PROTECTED_BODY}

    @app.post(
        "/api/v1/executions/{execution_id}/cancel",
        dependencies=[Depends(require(Role.OPERATOR))],
    )
    async def cancel(execution_id: str) -> dict[str, str]:
        return {"body": PROTECTED_BODY}

    @app.post("/api/v1/pipelines", dependencies=[Depends(require(Role.ADMIN))])
    async def push() -> dict[str, str]:
        return {"body": PROTECTED_BODY}

    return app


@asynccontextmanager
async def token_service(folder: Path) -> AsyncIterator[TokenService]:
    """A TokenService over a fresh SQLite database in `folder`."""
    engine = make_engine(f"sqlite+aiosqlite:///{folder / 'tokens.db'}")
    try:
        await upgrade(engine)
        yield TokenService(engine)
    finally:
        await engine.dispose()
