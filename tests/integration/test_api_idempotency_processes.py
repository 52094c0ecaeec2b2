"""Two servers on one database started with the same `Idempotency-Key` at once: one
execution goes on, the other server's (started before its key lost) is cancelled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from whenflow.api.app import create_app
from whenflow.services.settings import Settings

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: idem, version: 1.0.0}
spec:
  nodes:
    - id: review
      task: {type: approval, message: "go?"}
"""


async def test_one_key_started_on_two_servers_leaves_one_execution_going(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'idem.db'}")
    one, two = create_app(settings), create_app(settings)
    async with (
        one.router.lifespan_context(one),
        two.router.lifespan_context(two),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=one), base_url="http://127.0.0.1") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=two), base_url="http://localhost") as b,
    ):
        pushed = await a.post(
            "/api/v1/pipelines", params={"publish": "true"}, content=PIPELINE.encode()
        )
        assert pushed.status_code == 201, pushed.text
        for key in ("k1", "k2", "k3"):
            answers = await asyncio.gather(
                *(
                    client.post("/api/v1/pipelines/idem/start", json={}, headers={"Idempotency-Key": key})
                    for client in (a, b, a, b)
                )
            )  # fmt: skip
            assert {r.status_code for r in answers} <= {200, 201}, [r.text for r in answers]
            assert len({r.json()["executionId"] for r in answers}) == 1
        listed = (await a.get("/api/v1/executions", params={"limit": 100})).json()["items"]
        going = [e for e in listed if e["status"] != "cancelled"]
        assert len(going) == 3, listed
