"""Notifications (`spec.notify`) to real loopback receivers: signed webhook, Slack, email.

The executions run through `ExecutionService`, as `whenflow run` does; the
notifier sends in the background and `drain()` waits for it. A secret canary
bound into the failing task is masked in every message and never stored.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from loopback_receivers import free_port, http_receiver, smtp_receiver
from whenflow.domain.records import MessageKind
from whenflow.dsl.load import load_program_text
from whenflow.dsl.program import PipelineProgram
from whenflow.services.executions import ExecutionService
from whenflow.services.notifications import Notifier, NotifyPolicy
from whenflow.services.notify_channels import DELIVERY_HEADER, SIGNATURE_HEADER, sign
from whenflow.storage import notifications, tables
from whenflow.storage.artifacts import FsspecArtifactStore
from whenflow.storage.connections import EnvironmentConnections
from whenflow.storage.secrets import EnvSecretStore
from whenflow.storage.state_store import SqlStateStore
from whenflow.testing import InlineRunner

CANARY = "canary-7f3a9c1e-never-shown"
SIGNING = "signing-secret-b52e"


def explode(token: str) -> dict[str, Any]:
    raise RuntimeError(f"boom: the warehouse refused token {token}")


RUNNER = InlineRunner({"tasks:explode": explode, "tasks:fine": lambda: {"rows": 3}})

FAILING = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: {name}, version: 2.0.0}}
spec:
  notify:
    - on: [failed]
      webhook: {{url: "{{{{ secret('ALERT_URL') }}}}/hook", signingSecret: "{{{{ secret('ALERT_SIGNING') }}}}"}}
    - on: [failed]
      slack: {{url: "{{{{ secret('ALERT_URL') }}}}/slack"}}
    - on: [failed]
      email: {{to: [ops@example.com], connection: smtp, from: whenflow@example.com}}
    - on: [completed]
      slack: {{url: "{{{{ secret('ALERT_URL') }}}}/never"}}
  nodes:
    - id: load
      task: {{type: python, callable: "tasks:explode"}}
      inputBindings: {{token: "{{{{ secret('CANARY') }}}}"}}
"""


def program(text: str) -> PipelineProgram:
    return load_program_text(text, RUNNER, path="notify.yaml")


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHENFLOW_SECRET_CANARY", CANARY)
    monkeypatch.setenv("WHENFLOW_SECRET_ALERT_SIGNING", SIGNING)


def service_with(store: SqlStateStore, tmp_path: Path, notifier: Notifier) -> ExecutionService:
    artifacts = FsspecArtifactStore(tmp_path.as_uri())
    return ExecutionService(store, artifacts, RUNNER, notifier=notifier)


def notifier_for(engine: AsyncEngine, smtp_port: int, **policy: Any) -> Notifier:
    connections = EnvironmentConnections(
        {"WHENFLOW_CONN_SMTP": f"smtp://mailer:mail-pass@127.0.0.1:{smtp_port}"}
    )
    return Notifier(
        engine,
        secrets=EnvSecretStore(),
        connections=connections,
        base_url="http://whenflow.test/ui/",
        policy=NotifyPolicy(**{"attempts": 3, "delay_s": 0.01, "timeout_s": 5.0, **policy}),
    )


async def stored_text(engine: AsyncEngine) -> str:
    """Every row of every table, as text: what a look at the database would show."""
    parts = []
    async with engine.connect() as connection:
        for table in tables.metadata.sorted_tables:
            parts.extend(repr(tuple(r)) for r in await connection.execute(sa.select(table)))
    return "\n".join(parts)


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Any, Any]]:
    with http_receiver() as http, smtp_receiver() as smtp:
        yield http, smtp


async def test_a_failure_is_sent_signed_to_every_channel_with_secrets_masked(
    store: SqlStateStore,
    engine: AsyncEngine,
    tmp_path: Path,
    secrets_env: None,
    monkeypatch: pytest.MonkeyPatch,
    receivers: tuple[Any, Any],
) -> None:
    http, smtp = receivers
    monkeypatch.setenv("WHENFLOW_SECRET_ALERT_URL", http.url)
    notifier = notifier_for(engine, smtp.port)
    service = service_with(store, tmp_path, notifier)
    name = f"notify-{uuid.uuid4().hex[:6]}"
    result = await service.run(program(FAILING.format(name=name)), {})
    assert str(result.status) == "failed"
    await notifier.drain()

    (hook,) = http.on("/hook")
    body = json.loads(hook.body)
    assert body["event"] == "execution.failed"
    assert (body["pipeline"], body["version"]) == (name, "2.0.0")
    assert (body["executionId"], body["status"], body["node"]) == (
        result.execution_id,
        "failed",
        "load",
    )
    assert "boom: the warehouse refused token ***" in body["error"]
    assert body["url"] == f"http://whenflow.test/ui/executions/{result.execution_id}"
    # The signature is the HMAC-SHA256 of the raw body under the signing secret.
    assert hook.headers[SIGNATURE_HEADER] == sign(SIGNING, hook.body)
    assert hook.headers["X-Whenflow-Event"] == "execution.failed"
    uuid.UUID(hook.headers[DELIVERY_HEADER])

    (slack,) = http.on("/slack")
    text = json.loads(slack.body)["text"]
    assert f"[whenflow] {name} failed" in text
    assert "node: load" in text
    assert "refused token ***" in text
    assert http.on("/never") == []  # `on: [completed]` is not told of a failure

    (mail,) = smtp.wait_for(1)
    assert smtp.logins == ["mailer"]
    assert mail["To"] == "ops@example.com"
    assert mail["From"] == "whenflow@example.com"
    assert mail["Subject"] == f"[whenflow] {name} failed"
    content = mail.get_payload(decode=True)
    assert isinstance(content, bytes)
    assert "refused token ***" in content.decode()

    for sent in [hook.body, slack.body, content]:
        assert CANARY.encode() not in sent
        assert SIGNING.encode() not in sent
    rows = await notifications.list_for(engine, result.execution_id)
    assert sorted((r.channel, r.status, r.attempts) for r in rows) == [
        ("email", "sent", 1),
        ("slack", "sent", 1),
        ("webhook", "sent", 1),
    ]
    everything = await stored_text(engine)
    assert CANARY not in everything
    assert SIGNING not in everything


async def test_a_receiver_that_is_down_leaves_the_outcome_and_is_recorded_failed(
    store: SqlStateStore,
    engine: AsyncEngine,
    tmp_path: Path,
    secrets_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WHENFLOW_SECRET_ALERT_URL", f"http://127.0.0.1:{free_port()}")
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    notifier = notifier_for(engine, free_port(), attempts=3, delay_s=0.5)
    notifier._sleep = no_wait
    service = service_with(store, tmp_path, notifier)
    result = await service.run(program(FAILING.format(name="down")), {})
    await notifier.drain()
    assert str(result.status) == "failed"
    assert (await service.show(result.execution_id)).status == result.status
    rows = await notifications.list_for(engine, result.execution_id)
    assert sorted((r.channel, r.status, r.attempts) for r in rows) == [
        ("email", "failed", 3),
        ("slack", "failed", 3),
        ("webhook", "failed", 3),
    ]
    assert all("could not" in (r.error or "") for r in rows), rows
    # Three channels, each waiting 0.5 s then 1 s between its three attempts.
    assert sorted(waits) == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]


async def test_retries_reach_a_receiver_that_recovers(
    store: SqlStateStore,
    engine: AsyncEngine,
    tmp_path: Path,
    secrets_env: None,
    monkeypatch: pytest.MonkeyPatch,
    receivers: tuple[Any, Any],
) -> None:
    http, smtp = receivers
    monkeypatch.setenv("WHENFLOW_SECRET_ALERT_URL", http.url)
    http.fail_next = 2  # the webhook's first two attempts get 503 (or the Slack one's)
    notifier = notifier_for(engine, smtp.port, attempts=4)
    service = service_with(store, tmp_path, notifier)
    result = await service.run(program(FAILING.format(name="flaky")), {})
    await notifier.drain()
    rows = await notifications.list_for(engine, result.execution_id)
    assert all(r.status == "sent" for r in rows), rows
    assert sum(r.attempts for r in rows) == 3 + 2  # two refusals, each retried once
    assert len(http.on("/hook")) == 1
    assert len(http.on("/slack")) == 1


APPROVAL = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  notify:
    - on: [waiting, stopped, completed]
      slack: {{url: "{url}/slack"}}
  nodes:
    - id: review
      task: {{type: approval, message: "Ship it?"}}
"""


async def test_an_approval_waiting_then_a_cancel_are_told(
    store: SqlStateStore, engine: AsyncEngine, tmp_path: Path, receivers: tuple[Any, Any]
) -> None:
    http, smtp = receivers
    notifier = notifier_for(engine, smtp.port)
    service = service_with(store, tmp_path, notifier)
    execution_id = str(uuid.uuid4())
    prog = program(APPROVAL.format(name="gate", url=http.url))
    run = asyncio.create_task(service.run(prog, {}, execution_id=execution_id))
    (waiting,) = await asyncio.to_thread(http.wait_for, 1)
    assert "[whenflow] gate: review waits for approval" in json.loads(waiting.body)["text"]
    assert "Ship it?" in json.loads(waiting.body)["text"]
    await service.send(execution_id, MessageKind.CANCEL, payload={"reason": "not today"})
    result = await run
    assert str(result.status) == "cancelled"
    await notifier.drain()
    stopped = json.loads(http.wait_for(2)[1].body)["text"]
    assert stopped.startswith("[whenflow] gate cancelled")
    rows = await notifications.list_for(engine, execution_id)
    assert [(r.outcome, r.status) for r in rows] == [("waiting", "sent"), ("stopped", "sent")]


COMPLETING = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: fine}}
spec:
  notify:
    - on: [completed]
      webhook: {{url: "{url}/done", headers: {{X-Team: data}}}}
    - on: [failed]
      webhook: {{url: "{url}/failed"}}
  nodes:
    - {{id: load, task: {{type: python, callable: "tasks:fine"}}}}
"""


async def test_a_completion_is_told_to_the_completed_rules_only(
    store: SqlStateStore, engine: AsyncEngine, tmp_path: Path, receivers: tuple[Any, Any]
) -> None:
    http, smtp = receivers
    notifier = notifier_for(engine, smtp.port)
    service = service_with(store, tmp_path, notifier)
    result = await service.run(program(COMPLETING.format(url=http.url)), {})
    await notifier.drain()
    (done,) = http.on("/done")
    assert http.on("/failed") == []
    body = json.loads(done.body)
    assert (body["event"], body["status"], body["node"], body["error"]) == (
        "execution.completed",
        "completed",
        None,
        None,
    )
    assert done.headers["X-Team"] == "data"
    assert SIGNATURE_HEADER not in done.headers  # no signing secret, no signature
    assert [(n.outcome, n.status) for n in await service.notifications(result.execution_id)] == [
        ("completed", "sent")
    ]
