"""`http` and `llm` tasks through a real `whenflow run`: secrets in headers and API keys masked.

The canaries (a `secret()` in an http header, an LLM key in a connection
URL) reach the loopback server, and appear nowhere in the SQLite store, the
CLI's output or the task logs, even when the server echoes them back in a
body, an error or the model's answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import EXAMPLES, connect_db, run_cli, write_pipeline

from loopback_http import LoopbackServer, serve

HEADER_CANARY = "canary-http-5b1f-header"
KEY_CANARY = "sk-canary-llm-90c2d7"

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: http-secrets, version: 1.0.0}
spec:
  nodes:
    - id: call
      task:
        type: http
        url: BASE/echo
        headers: {Authorization: "Bearer {{ secret('API_TOKEN') }}"}
        allowHosts: [127.0.0.1]
    - id: refused
      allowFailure: true
      task:
        type: http
        url: BASE/echo
        expectStatus: 201
        headers: {Authorization: "Bearer {{ secret('API_TOKEN') }}"}
        allowHosts: [127.0.0.1]
    - id: ask
      task: {type: llm, connection: model, model: show-auth, prompt: "who am I?"}
    - id: big
      task:
        type: http
        method: POST
        url: BASE/echo
        headers: {Authorization: "Bearer {{ secret('API_TOKEN') }}"}
        json: {a: "{{ 'x' * 600000 }}", b: "{{ 'y' * 600000 }}"}
        maxInlineBytes: 10000000
        allowHosts: [127.0.0.1]
    - id: ask_fail
      allowFailure: true
      task:
        type: llm
        connection: model
        model: show-auth
        prompt: x
        responseSchema: {type: object}
  outputs:
    seen: "{{ call.json.headers.authorization }}"
    answer: "{{ ask.content }}"
"""


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve(api_key=KEY_CANARY) as running:
        yield running


def dump_store(home: Path) -> str:
    conn = connect_db(home)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_header_secrets_and_llm_keys_are_masked_everywhere(
    tmp_path: Path, server: LoopbackServer
) -> None:
    pipeline = write_pipeline(tmp_path, "p.yaml", PIPELINE.replace("BASE", server.url))
    env = {
        "WHENFLOW_SECRET_API_TOKEN": HEADER_CANARY,
        "WHENFLOW_CONN_MODEL": f"http://:{KEY_CANARY}@127.0.0.1:{server.port}/v1",
    }
    proc = run_cli(tmp_path, "run", pipeline, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # Both reached the server...
    auth = [r["headers"].get("authorization") for r in server.requests]
    assert f"Bearer {HEADER_CANARY}" in auth
    assert f"Bearer {KEY_CANARY}" in auth
    # ...and nothing shows them.
    # (the whole rendered header derives from the secret, so the engine masks all of it)
    assert result["outputs"] == {"seen": "***", "answer": "you sent Bearer ***"}
    assert result["nodes"]["refused"]["status"] == "failed"
    assert "HTTP 200" in result["nodes"]["refused"]["error"]
    assert result["nodes"]["ask_fail"]["status"] == "failed"
    logs = run_cli(tmp_path, "executions", "logs", result["executionId"], env=env)
    store = dump_store(tmp_path)
    assert "you sent Bearer ***" in store
    for canary in (HEADER_CANARY, KEY_CANARY):
        assert canary not in proc.stdout
        assert canary not in proc.stderr
        assert canary not in store
        assert canary not in logs.stdout + logs.stderr
    plain = run_cli(tmp_path, "run", pipeline, env=env)
    for canary in (HEADER_CANARY, KEY_CANARY):
        assert canary not in plain.stdout + plain.stderr
    # Every file whenflow wrote: the store, its journal, the artifacts.
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("artifacts" in p.parts for p in written)
    for path in written:
        data = path.read_bytes()
        for canary in (HEADER_CANARY, KEY_CANARY):
            assert canary.encode() not in data, path


def test_a_task_naming_an_undefined_connection_fails_clearly(
    tmp_path: Path, server: LoopbackServer
) -> None:
    pipeline = write_pipeline(
        tmp_path,
        "p.yaml",
        """
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {name: no-conn, version: 1.0.0}
        spec:
          nodes:
            - id: ask
              task: {type: llm, connection: nowhere, model: echo, prompt: x}
        """,
    )
    proc = run_cli(tmp_path, "run", pipeline, "--json")
    assert proc.returncode != 0
    error = json.loads(proc.stdout)["nodes"]["ask"]["error"]
    assert "connection 'nowhere' is not defined" in error
    assert "WHENFLOW_CONN_NOWHERE" in error


def test_the_summarise_page_example(tmp_path: Path, server: LoopbackServer) -> None:
    env = {
        "WHENFLOW_CONN_SOURCE": server.url,
        "WHENFLOW_CONN_LLM": f"http://:{KEY_CANARY}@127.0.0.1:{server.port}/v1",
    }
    example = EXAMPLES / "summarise_page.yaml"
    proc = run_cli(
        tmp_path, "run", example, "-i", "path=/page", "-i", "model=summary", "--json", env=env
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    summary = result["outputs"]["summary"]  # the fake's: the prompt's last 12 words
    assert summary == "engine records every event so a crashed execution resumes where it stopped."
    assert result["outputs"]["keywords"] == [
        "execution",
        "pipelines",
        "summarise",
        "keywords",
        "sentence",
    ]
    assert result["outputs"]["tokens"] > 20
    asked = server.requests[-1]["json"]
    assert asked["model"] == "summary"
    assert "<h1>Durable pipelines</h1>" in asked["messages"][-1]["content"]
    assert KEY_CANARY not in proc.stdout + proc.stderr
    assert KEY_CANARY not in dump_store(tmp_path)
