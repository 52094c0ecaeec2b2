"""The API's one error shape, in-process: a bug is a 500 in that shape too, and an
unknown route is a 404 in it."""

from __future__ import annotations

import httpx

from whenflow.api.app import create_app
from whenflow.services.settings import Settings


async def test_a_bug_in_a_route_is_a_500_in_the_error_shape() -> None:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))

    @app.get("/boom")
    async def boom() -> None:
        raise ZeroDivisionError("detail 42")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        crashed = await client.get("/boom")
        unknown = await client.get("/api/v1/nowhere")
    assert crashed.status_code == 500
    assert crashed.json()["error"]["code"] == "internal"
    assert "detail 42" not in crashed.text  # the traceback stays in the server log
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
