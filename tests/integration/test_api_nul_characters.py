"""A NUL character in a request is a 422, never stored: PostgreSQL cannot store one in
text, and a cancel reason carrying one used to leave the server's store unable to
commit anything (every later start a 503)."""

from __future__ import annotations

from pathlib import Path

import httpx

from whenflow.api.app import create_app
from whenflow.services.settings import Settings


async def test_a_nul_character_in_the_path_query_or_body_is_refused(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'nul.db'}"))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        answers = [
            await client.get("/api/v1/executions/a%00b"),
            await client.get("/api/v1/executions", params={"pipeline": "a\x00b"}),
            await client.post("/api/v1/executions/x/cancel", json={"reason": "a\x00b"}),
            await client.post("/api/v1/pipelines/x/start", json={"inputVariables": {"a\x00": 1}}),
            await client.post(  # a lone surrogate cannot be written as UTF-8 either
                "/api/v1/pipelines/x/start",
                content=b'{"inputVariables": {"s": "a\\ud800b"}}',
                headers={"Content-Type": "application/json"},
            ),
        ]
    for answer in answers:
        assert answer.status_code == 422, (answer.request.url, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"
        assert "NUL" in answer.json()["error"]["message"]
