"""`http` and `llm` nodes in real pipeline runs: retries, rendered prompts, failures, artifacts."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopback_http import LoopbackServer, serve
from whenflow.backends.local import LocalRunner
from whenflow.domain.records import AttemptRecorded, VariableWritten
from whenflow.dsl.load import load_program_text
from whenflow.engine.orchestrator import Orchestrator
from whenflow.engine.runtime import ExecutionResult
from whenflow.executors.registry import default_registry
from whenflow.storage.connections import EnvironmentConnections
from whenflow.testing import InMemoryArtifactStore, InMemoryStateStore

KEY = "sk-pipeline-canary-31337"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve(api_key=KEY) as running:
        yield running


async def run(
    spec: str, server: LoopbackServer, inputs: dict[str, Any] | None = None
) -> tuple[ExecutionResult, InMemoryStateStore]:
    env = {"WHENFLOW_CONN_MODEL": f"http://:{KEY}@127.0.0.1:{server.port}/v1"}
    registry = default_registry(connections=EnvironmentConnections(env))
    runner = LocalRunner(registry)
    text = (
        "apiVersion: whenflow/v1\nkind: Pipeline\nmetadata: {name: t, version: 1.0.0}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
        + "\n"
    )
    program = load_program_text(text.replace("BASE", server.url), runner, path="t.yaml")
    store = InMemoryStateStore()
    orchestrator = Orchestrator(
        program,
        store=store,
        runner=runner,
        artifacts=InMemoryArtifactStore(),
        inputs=inputs or {},
        inbox_poll_s=None,
    )
    try:
        return await orchestrator.run(), store
    finally:
        runner.close()


async def test_a_500_then_200_is_retried_to_completion(server: LoopbackServer) -> None:
    result, store = await run(
        """
        nodes:
          - id: fetch
            retry: {maxAttempts: 3, delay: 10ms, retryOn: [HttpServerError]}
            task:
              type: http
              url: BASE/flaky
              query: {key: pipeline-1, fail: 1}
              allowHosts: [127.0.0.1]
          - id: after
            startWhen: event:fetch.completed
            task: {type: noop}
            inputBindings: {calls: "{{ fetch.json.calls }}"}
        outputs:
          calls: "{{ after.calls }}"
        """,
        server,
    )
    assert str(result.status) == "completed", result.error
    assert result.nodes["fetch"].attempts == 2
    assert result.outputs == {"calls": 2}
    retrying = [e for e in store.events() if e.event_type == "fetch.retrying"]
    assert len(retrying) == 1
    assert retrying[0].payload["error_type"] == "HttpServerError"
    assert "HTTP 500" in retrying[0].payload["message"]
    assert "flaky failure 1" in retrying[0].payload["message"]
    attempts: dict[int, AttemptRecorded] = {}
    for record in store.records:
        if isinstance(record, AttemptRecorded) and record.node_id == "fetch":
            attempts[record.attempt] = record  # upserted: the last record wins
    assert [str(a.status) for a in attempts.values()] == ["failed", "completed"]
    assert attempts[1].error_type == "HttpServerError"
    assert attempts[2].error_type is None


async def test_a_prompt_rendered_from_inputs_and_a_rate_limit_retried(
    server: LoopbackServer,
) -> None:
    result, store = await run(
        """
        inputs:
          topic: {type: string}
        nodes:
          - id: ask
            retry: {maxAttempts: 2, retryOn: [HttpRateLimited, HttpServerError, HttpTimeout]}
            task:
              type: llm
              connection: model
              model: rate-limit-once
              prompt: "Summarise {{ pipeline.input.topic }} in one line"
          - id: structured
            task:
              type: llm
              connection: model
              model: json-echo
              prompt: "{{ pipeline.input.topic }}"
              responseSchema:
                type: object
                required: [echo, words]
                properties: {echo: {type: string}, words: {type: integer}}
        outputs:
          content: "{{ ask.content }}"
          words: "{{ structured.json.words }}"
          tokens: "{{ ask.usage.total_tokens }}"
          model: "{{ ask.model }}"
        """,
        server,
        {"topic": "durable pipeline engines"},
    )
    assert str(result.status) == "completed", result.error
    assert result.outputs == {
        "content": "Summarise durable pipeline engines in one line",
        "words": 3,
        "tokens": 14,
        "model": "rate-limit-once-loopback",
    }
    assert result.nodes["ask"].attempts == 2
    dump = repr(store.records)
    assert KEY not in dump


@pytest.mark.parametrize(
    ("model", "limit", "cause"),
    [
        ("slow", "300ms", "no answer within 0.3s"),
        ("malformed", "5s", "the answer is not JSON"),
        ("schema-violation", "5s", "does not match `responseSchema`"),
    ],
)
async def test_llm_failures_end_in_a_clear_node_error(
    server: LoopbackServer, model: str, limit: str, cause: str
) -> None:
    result, store = await run(
        f"""
        nodes:
          - id: analyse
            task:
              type: llm
              connection: model
              model: {model}
              prompt: hello
              timeout: {limit}
              responseSchema: {{type: object, required: [echo], properties: {{echo: {{type: string}}}}}}
        """,
        server,
    )
    assert str(result.status) == "failed"
    node = result.nodes["analyse"]
    assert str(node.status) == "failed"
    assert node.error is not None
    assert cause in node.error
    assert node.error.startswith("llm task: ")
    failed = [e for e in store.events() if e.event_type == "analyse.failed"]
    assert len(failed) == 1
    assert cause in failed[0].payload["message"]


async def test_a_large_body_goes_to_the_artifact_store(server: LoopbackServer) -> None:
    result, store = await run(
        """
        nodes:
          - id: download
            task:
              type: http
              url: BASE/big?bytes=300000
              maxInlineBytes: 65536
              allowHosts: [127.0.0.0/8]
        outputs:
          size: "{{ download.size }}"
          path: "{{ download.body }}"
        """,
        server,
    )
    assert str(result.status) == "completed", result.error
    assert result.outputs["size"] == 300_000
    assert len(Path(result.outputs["path"]).read_bytes()) == 300_000  # noqa: ASYNC240
    body = [
        r.variable
        for r in store.records
        if isinstance(r, VariableWritten) and r.variable.name == "body"
    ]
    assert body[0].artifact is not None
    assert body[0].artifact.kind == "file"
    assert body[0].value is None  # the bytes are not in the variable table


async def test_an_egress_refusal_fails_the_node(server: LoopbackServer) -> None:
    result, _ = await run(
        """
        nodes:
          - id: metadata
            task: {type: http, url: "http://169.254.169.254/latest/meta-data/"}
        """,
        server,
    )
    error = result.nodes["metadata"].error
    assert error is not None
    assert "egress to 169.254.169.254 refused: link-local" in error


async def test_a_retry_after_hint_sets_the_retry_delay(server: LoopbackServer) -> None:
    server.retry_after = "1"
    result, store = await run(
        """
        nodes:
          - id: patient
            retry: {maxAttempts: 2, delay: 10ms}
            task: {type: llm, connection: model, model: rate-limit-once, prompt: patient}
          - id: capped
            retry: {maxAttempts: 2, delay: 10ms, maxDelay: 50ms}
            task: {type: llm, connection: model, model: rate-limit-once, prompt: capped}
        """,
        server,
    )
    assert str(result.status) == "completed", result.error
    delays = {e.source: e.payload["delay"] for e in store.events() if e.name == "retrying"}
    assert delays == {"patient": 1.0, "capped": 0.05}
    messages = [e.payload["message"] for e in store.events() if e.name == "retrying"]
    assert all("the server asks to retry after 1s" in m for m in messages)


async def test_the_node_timeout_cancels_a_request_in_flight(server: LoopbackServer) -> None:
    result, store = await run(
        """
        nodes:
          - id: stuck
            timeout: 2s
            task: {type: http, url: BASE/slow, timeout: 60s, allowHosts: [127.0.0.1]}
        """,
        server,
    )
    error = result.nodes["stuck"].error
    assert error == "node 'stuck' timed out after 2s"
    assert server.waiting.is_set()  # the request was in flight when it was cancelled
    assert not server.release.is_set()
    failed = [e for e in store.events() if e.event_type == "stuck.failed"]
    assert failed[0].payload["error_type"] == "TaskTimeout"
