"""`{{ secret('NAME') }}`: tasks get the value; nothing stored or shown contains it (DESIGN.md §6)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from engine_harness import make

from whenflow.domain.records import LogAppended, VariableWritten
from whenflow.storage.secrets import EnvSecretStore

CANARY = "canary-s3cr3t-7f3a"
SECRETS = EnvSecretStore({"WHENFLOW_SECRET_API_TOKEN": CANARY, "WHENFLOW_SECRET_PIN": "42"})

SPEC = """
nodes:
  - id: call
    task: {type: python, callable: call}
    emits: [progress]
    inputBindings:
      token: "{{ secret('API_TOKEN') }}"
      url: "https://api.example.com/?key={{ secret('API_TOKEN') }}"
      pin: "{{ secret('PIN') }}"
  - id: leak
    allowFailure: true
    task: {type: python, callable: leak}
    inputBindings: {token: "{{ secret('API_TOKEN') }}"}
outputs:
  echoed: "{{ call.echo }}"
  length: "{{ call.length }}"
"""


async def test_tasks_get_secrets_and_nothing_stored_or_shown_contains_them() -> None:
    received: list[str] = []

    def call(token: str, url: str, pin: str, ctx: Any) -> dict[str, Any]:
        received.extend([token, url, pin])
        ctx.log(f"calling {url}")
        ctx.emit("progress", {"token": token})
        return {"echo": f"got {token}", "length": len(token), "pin": pin}

    def leak(token: str) -> dict[str, Any]:
        raise ValueError(f"the server refused {token}")

    seen: list[Any] = []
    orch, store = make(SPEC, {"call": call, "leak": leak}, secrets=SECRETS)
    orch.add_listener(seen.append)
    result = await orch.run()

    assert received == [CANARY, f"https://api.example.com/?key={CANARY}", "42"]
    assert result.status.value == "completed"
    assert result.outputs == {"echoed": "got ***", "length": len(CANARY)}
    assert result.nodes["call"].outputs["echo"] == "got ***"
    assert result.nodes["leak"].error == "ValueError: the server refused ***"
    assert CANARY not in repr(store.records)
    assert CANARY not in repr(result)
    assert CANARY not in repr(seen)  # listeners (the CLI's progress) see masked events
    (progress,) = [e.payload for e in store.events() if e.event_type == "call.progress"]
    assert progress["token"] == "***"
    (echo,) = [
        r.variable.value
        for r in store.records
        if isinstance(r, VariableWritten) and r.variable.name == "echo"
    ]
    assert echo == "got ***"
    # Values shorter than 4 characters are not masked: "42" would garble every number.
    assert result.nodes["call"].outputs["pin"] == "42"


async def test_a_secret_that_is_not_set_fails_its_node_and_says_where_to_set_it() -> None:
    orch, _ = make(
        "nodes: [{id: a, task: {type: noop}, inputBindings: {t: \"{{ secret('NOPE') }}\"}}]",
        secrets=SECRETS,
    )
    result = await orch.run()
    assert result.nodes["a"].status.value == "failed"
    assert "set the environment variable WHENFLOW_SECRET_NOPE" in (result.nodes["a"].error or "")


async def test_multi_line_numeric_and_offloaded_secrets_are_masked_too() -> None:
    pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END KEY-----"
    secrets = EnvSecretStore({"WHENFLOW_SECRET_PEM": pem, "WHENFLOW_SECRET_PIN": "739184"})

    def use(key: str, pin: int, ctx: Any) -> dict[str, Any]:
        for line in key.splitlines():
            ctx.log(line)  # logs arrive a line at a time
        return {"pin": pin, "big": "x" * 200 + key}

    artifacts_seen: list[Any] = []
    orch, store = make(
        """
        nodes:
          - id: a
            task: {type: python, callable: use}
            inputBindings: {key: "{{ secret('PEM') }}", pin: "{{ secret('PIN') | int }}"}
        """,
        {"use": use},
        secrets=secrets,
        offload_bytes=100,
    )
    put_value = orch.pool.artifacts.put_value  # type: ignore[union-attr]

    def watched(key: str, value: Any) -> Any:
        artifacts_seen.append(value)
        return put_value(key, value)

    orch.pool.artifacts.put_value = watched  # type: ignore[union-attr, method-assign]
    result = await orch.run()

    assert result.status.value == "completed"
    assert "MIIBOgIBAAJBAKj34GkxFhD9" not in repr(store.records)
    assert "739184" not in repr(store.records)
    assert result.nodes["a"].outputs["pin"] == "***"
    assert artifacts_seen == ["x" * 200 + "***"]  # what the artifact store got


DERIVED = """
nodes:
  - id: use
    task: {type: python, callable: use}
    emits: [progress]
    inputBindings:
      short: "{{ secret('TOKEN')[:-1] }}"
      upper: "{{ secret('TOKEN') | upper }}"
      pin: "{{ secret('PIN') | float }}"
      parts: "{{ [secret('TOKEN')[2:], 7] }}"
      plain: "{{ pipeline.input.name }}"
outputs:
  short: "{{ use.short }}"
  pin: "{{ use.pin }}"
"""


async def test_a_value_derived_from_a_secret_is_masked_like_the_secret() -> None:
    token, pin = "tok-5e8a1c-d77f", "48213"
    secrets = EnvSecretStore({"WHENFLOW_SECRET_TOKEN": token, "WHENFLOW_SECRET_PIN": pin})
    received: dict[str, Any] = {}

    def use(short: str, upper: str, pin: float, parts: list[Any], plain: str, ctx: Any) -> Any:
        received.update(short=short, upper=upper, pin=pin, parts=parts, plain=plain)
        ctx.log(f"short={short} upper={upper} pin={pin} part={parts[0]}")
        ctx.emit("progress", {"short": short, "pin": pin})
        return {"short": short, "pin": pin, "plain": plain}

    seen: list[Any] = []
    orch, store = make(DERIVED, {"use": use}, {"name": "plain-name"}, secrets=secrets)
    orch.add_listener(seen.append)
    result = await orch.run()

    assert received == {
        "short": token[:-1],
        "upper": token.upper(),
        "pin": 48213.0,
        "parts": [token[2:], 7],
        "plain": "plain-name",
    }
    assert result.status.value == "completed"
    everything = repr(store.records) + repr(result) + repr(seen)
    for derived in (token[:-1], token.upper(), token[2:], "48213"):
        assert derived not in everything
    assert result.outputs == {"short": "***", "pin": "***"}
    assert result.nodes["use"].outputs["plain"] == "plain-name"  # no secret read: not masked


async def test_a_condition_reading_a_secret_reveals_nothing_it_did_not_compute() -> None:
    secrets = EnvSecretStore({"WHENFLOW_SECRET_TOKEN": "tok-5e8a1c-d77f"})

    def use(name: str) -> dict[str, Any]:
        return {"name": name}

    orch, _ = make(
        """
        nodes:
          - id: use
            startWhen: "{{ secret('TOKEN') | length > 3 }}"
            task: {type: python, callable: use}
            inputBindings: {name: "{{ pipeline.input.name }}"}
        """,
        {"use": use},
        {"name": "true-name"},
        secrets=secrets,
    )
    result = await orch.run()
    assert result.nodes["use"].outputs == {"name": "true-name"}


def test_the_store_takes_secrets_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"TAKEN_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(f"WHENFLOW_SECRET_{name}", "taken-value-1")
    store = EnvSecretStore()
    assert f"WHENFLOW_SECRET_{name}" not in os.environ
    assert store.get(name) == "taken-value-1"
    assert EnvSecretStore().get(name) == "taken-value-1"  # a second store still has it
    assert not [k for k in os.environ if k.startswith("WHENFLOW_SECRET_")]


def test_a_secret_set_after_the_store_was_made_is_taken_when_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = EnvSecretStore()
    name = f"LATE_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(f"WHENFLOW_SECRET_{name}", "late-value-2")
    assert store.get(name) == "late-value-2"
    assert f"WHENFLOW_SECRET_{name}" not in os.environ
    assert store.get("NOT_SET_ANYWHERE") is None


async def test_a_secret_a_task_logs_as_json_is_masked() -> None:
    # A quote, a backslash or a non-ASCII letter is escaped by json.dumps: the
    # escaped text reached the log unmasked.
    token = 'pa"ss\\word-\u5bc6\u7801'
    secrets = EnvSecretStore({"WHENFLOW_SECRET_TOKEN": token})

    def use(token: str, ctx: Any) -> dict[str, Any]:
        ctx.log(json.dumps({"token": token}))
        ctx.log(json.dumps({"token": token}, ensure_ascii=False))
        return {}

    orch, store = make(
        """
        nodes:
          - id: use
            task: {type: python, callable: use}
            inputBindings: {token: "{{ secret('TOKEN') }}"}
        """,
        {"use": use},
        secrets=secrets,
    )
    result = await orch.run()
    assert result.status.value == "completed"
    logs = [r.message for r in store.records if isinstance(r, LogAppended)]
    assert logs == ['{"token": "***"}', '{"token": "***"}']
