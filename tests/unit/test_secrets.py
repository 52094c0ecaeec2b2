"""`{{ secret('NAME') }}`: tasks get the value; nothing stored or shown contains it (DESIGN.md §6)."""

from __future__ import annotations

from typing import Any

from engine_harness import make

from whenflow.domain.records import VariableWritten
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
