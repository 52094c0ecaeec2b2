"""A task that prints a NUL byte: its log line is stored (NUL shown as U+FFFD) and the
server goes on. On PostgreSQL, which cannot store NUL in text, the line used to leave
the store unable to commit: the execution stopped and every later start was a 503."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from whenflow.api.app import create_app
from whenflow.domain.auth import Role
from whenflow.services.settings import Settings

PIPELINE = r"""
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: nulout, version: 1.0.0}
spec:
  nodes:
    - id: n
      task: {type: shell, script: 'printf "a\000b\n" >&2; [ -z "$WF_INPUT_FAIL" ] || exit 3'}
      inputBindings: {fail: "{{ pipeline.input.fail }}"}
  inputs:
    fail: {type: string, default: ""}
"""


async def _finished(client: httpx.AsyncClient, execution_id: str) -> dict[str, object]:
    async with asyncio.timeout(60):
        while True:
            shown = await client.get(f"/api/v1/executions/{execution_id}")
            assert shown.status_code == 200, shown.text
            if shown.json()["status"] not in ("running", "waiting"):
                return dict(shown.json())
            await asyncio.sleep(0.02)  # the poll interval of a status read


async def test_a_nul_byte_a_task_prints_is_logged_and_the_server_goes_on(
    db_url: str, tmp_path: Path
) -> None:
    app = create_app(Settings(database_url=db_url, artifacts_url=str(tmp_path / "artifacts")))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        issued = await app.state.tokens.create(Role.ADMIN, "nul")  # the database is shared
        client.headers["Authorization"] = f"Bearer {issued.token}"
        pushed = await client.post(
            "/api/v1/pipelines", params={"publish": "true"}, content=PIPELINE.encode()
        )
        assert pushed.status_code == 201, pushed.text
        for fail, status in [("", "completed"), ("yes", "failed"), ("", "completed")]:
            body = {"inputVariables": {"fail": fail}}
            started = await client.post("/api/v1/pipelines/nulout/start", json=body)
            assert started.status_code == 201, started.text  # the store still commits
            execution_id = started.json()["executionId"]
            assert (await _finished(client, execution_id))["status"] == status
            logs = await client.get(f"/api/v1/executions/{execution_id}/nodes/n/logs")
            assert [line["message"] for line in logs.json()["items"]] == ["a\ufffdb"]
