"""An approval decided through the API without `by` is in the name of the caller's
token (docs/api.md), so `approvers` names a token's holder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from whenflow.api.app import create_app
from whenflow.domain.auth import Role
from whenflow.services.settings import Settings

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: gate, version: 1.0.0}
spec:
  nodes:
    - id: review
      task: {type: approval, message: "go?", approvers: [alice]}
  outputs:
    by: "{{ review.by }}"
"""


async def test_an_approval_without_by_is_decided_in_the_token_name(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}"))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        admin = await app.state.tokens.create(Role.ADMIN, "ops")
        alice = await app.state.tokens.create(Role.OPERATOR, "alice")
        pushed = await client.post(
            "/api/v1/pipelines",
            params={"publish": "true"},
            content=PIPELINE.encode(),
            headers={"Authorization": f"Bearer {admin.token}"},
        )
        assert pushed.status_code == 201, pushed.text
        as_alice = {"Authorization": f"Bearer {alice.token}"}
        started = await client.post("/api/v1/pipelines/gate/start", json={}, headers=as_alice)
        execution_id = started.json()["executionId"]
        decided = await client.post(
            f"/api/v1/executions/{execution_id}/nodes/review/approve", json={}, headers=as_alice
        )
        assert decided.status_code == 200, decided.text
        async with asyncio.timeout(30):
            while True:
                shown = await client.get(f"/api/v1/executions/{execution_id}", headers=as_alice)
                if shown.json()["status"] == "completed":
                    break
                await asyncio.sleep(0.02)  # the poll interval of a status read
    assert shown.json()["outputs"] == {"by": "alice"}
