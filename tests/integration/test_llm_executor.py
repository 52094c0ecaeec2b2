"""The `llm` executor against a loopback server that speaks the chat-completions protocol."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from loopback_http import LoopbackServer, serve
from taskfuncs.recording import RecordingContext
from whenflow.domain.connections import Connection
from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import TaskRequest
from whenflow.executors.errors import InvalidTaskConfig
from whenflow.executors.http_errors import (
    EgressDenied,
    HttpRateLimited,
    HttpServerError,
    HttpStatusError,
    HttpTimeout,
    LlmAnswerError,
    LlmSchemaViolation,
)
from whenflow.executors.llm import LlmExecutor
from whenflow.storage.connections import EnvironmentConnections

KEY = "sk-canary-7f3e9a1b2c"
SCHEMA = {
    "type": "object",
    "required": ["echo", "words"],
    "properties": {"echo": {"type": "string"}, "words": {"type": "integer", "minimum": 0}},
}


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve(api_key=KEY) as running:
        yield running


@pytest.fixture
def llm(server: LoopbackServer) -> LlmExecutor:
    """Connection `model_api`: the server's /v1 base, its key as the URL's password."""
    env = {"WHENFLOW_CONN_MODEL_API": f"http://:{KEY}@127.0.0.1:{server.port}/v1"}
    return LlmExecutor(EnvironmentConnections(env))


def llm_request(**config: Any) -> TaskRequest:
    return TaskRequest(
        execution_id="exec-1",
        node_id="ask",
        attempt=1,
        task=TaskSpec(type="llm", config=config),
        inputs={},
        idempotency_key="exec-1/ask",
    )


async def ask(executor: LlmExecutor, ctx: RecordingContext | None = None, **config: Any) -> Any:
    config.setdefault("connection", "model_api")
    result = await executor.execute(llm_request(**config), ctx or RecordingContext())
    return result.outputs


async def test_a_prompt_is_sent_and_the_answer_read(
    server: LoopbackServer, llm: LlmExecutor
) -> None:
    ctx = RecordingContext()
    out = await ask(
        llm,
        ctx,
        model="echo",
        prompt="three little words",
        system="Be brief.",
        temperature=0.2,
        maxTokens=50,
    )
    assert out["content"] == "three little words"
    assert out["model"] == "echo-loopback"
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert out["json"] is None
    sent = server.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["json"] == {
        "model": "echo",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "three little words"},
        ],
        "temperature": 0.2,
        "max_tokens": 50,
    }
    logged = "\n".join(message for _, message in ctx.logs)
    assert "-> 200" in logged
    assert "total_tokens" in logged
    assert KEY not in logged


async def test_messages_are_sent_as_given(server: LoopbackServer, llm: LlmExecutor) -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": {"structured": True}},
    ]
    out = await ask(llm, model="echo", messages=messages)
    assert out["content"] == '{"structured": true}'
    assert [m["role"] for m in server.requests[-1]["json"]["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
    ]


@pytest.mark.parametrize("model", ["json-echo", "fenced-json"])
async def test_a_response_schema_is_asked_for_parsed_and_validated(
    server: LoopbackServer, llm: LlmExecutor, model: str
) -> None:
    out = await ask(llm, model=model, prompt="count these four words", responseSchema=SCHEMA)
    assert out["json"] == {"echo": "count these four words", "words": 4}
    sent = server.requests[-1]["json"]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"][0]["role"] == "system"
    assert json.dumps(SCHEMA, sort_keys=True) in sent["messages"][0]["content"]


async def test_bad_answers_fail_with_the_cause(server: LoopbackServer, llm: LlmExecutor) -> None:
    with pytest.raises(LlmSchemaViolation, match=r"at echo: 42 is not of type 'string'"):
        await ask(llm, model="schema-violation", prompt="x", responseSchema=SCHEMA)
    with pytest.raises(LlmAnswerError, match="the answer is not JSON"):
        await ask(llm, model="malformed", prompt="x")
    with pytest.raises(LlmAnswerError, match=r"no choices\[0\].message.content"):
        await ask(llm, model="no-choices", prompt="x")
    with pytest.raises(LlmAnswerError, match="not the JSON `responseSchema` asks for"):
        await ask(llm, model="echo", prompt="plain words", responseSchema=SCHEMA)


async def test_timeouts_rate_limits_and_server_errors(
    server: LoopbackServer, llm: LlmExecutor
) -> None:
    with pytest.raises(HttpTimeout, match=r"/v1/chat/completions: no answer within 0.3s"):
        await ask(llm, model="slow", prompt="x", timeout="300ms")
    with pytest.raises(HttpRateLimited) as limited:
        await ask(llm, model="rate-limit-once", prompt="once")
    assert limited.value.retry_after_s == 0.0
    assert (await ask(llm, model="rate-limit-once", prompt="once"))["content"] == "once"
    with pytest.raises(HttpServerError, match="HTTP 503"):
        await ask(llm, model="error-once", prompt="twice")
    assert (await ask(llm, model="error-once", prompt="twice"))["content"] == "twice"


async def test_the_api_key_is_never_shown(server: LoopbackServer, llm: LlmExecutor) -> None:
    out = await ask(llm, model="show-auth", prompt="x")
    assert out["content"] == "you sent Bearer ***"
    wrong = LlmExecutor()
    with pytest.raises(HttpStatusError, match=r"HTTP 401.*invalid api key") as refused:
        await wrong.execute(
            llm_request(
                baseUrl=f"{server.url}/v1",
                apiKey="sk-wrong-key-000",
                model="echo",
                prompt="x",
                allowHosts=["127.0.0.1"],
            ),
            RecordingContext(),
        )
    assert "sk-wrong-key-000" not in str(refused.value)


async def test_connection_extras_and_a_key_from_a_secret(server: LoopbackServer) -> None:
    conn = Connection(
        name="deep", url=f"{server.url}/v1", extra={"apiKey": KEY, "model": "json-echo"}
    )

    class One:
        def get(self, name: str) -> Connection:
            return conn

        def names(self) -> list[str]:
            return ["deep"]

    out = await ask(LlmExecutor(One()), connection="deep", prompt="a b")
    assert out["content"] == '{"echo": "a b", "words": 2}'
    # baseUrl + apiKey (rendered from a secret by the engine) instead of a connection
    direct = await LlmExecutor().execute(
        llm_request(
            baseUrl=f"{server.url}/v1",
            apiKey=KEY,
            model="echo",
            prompt="hi",
            allowHosts=["127.0.0.1"],
        ),
        RecordingContext(),
    )
    assert direct.outputs["content"] == "hi"


async def test_the_egress_policy_applies(server: LoopbackServer) -> None:
    with pytest.raises(EgressDenied, match="loopback"):
        await LlmExecutor().execute(
            llm_request(baseUrl=f"{server.url}/v1", apiKey=KEY, model="echo", prompt="x"),
            RecordingContext(),
        )
    with pytest.raises(EgressDenied, match="link-local"):
        await LlmExecutor().execute(
            llm_request(baseUrl="http://169.254.169.254/v1", model="echo", prompt="x"),
            RecordingContext(),
        )
    assert server.requests == []


def test_check_reports_configuration_problems() -> None:
    check = LlmExecutor().check
    good = {"connection": "deepseek", "model": "deepseek-chat", "prompt": "{{ x.text }}"}
    assert check(TaskSpec(type="llm", config=good)) == []
    problems = "\n".join(
        check(
            TaskSpec(
                type="llm",
                config={
                    "prompt": "a",
                    "messages": [],
                    "temperature": "hot",
                    "maxTokens": 0,
                    "responseSchema": {"type": "no-such-type"},
                    "flavour": 1,
                },
            )
        )
    )
    for part in ("exactly one of", "temperature", "maxTokens", "responseSchema", "flavour"):
        assert part in problems
    with pytest.raises(InvalidTaskConfig, match="give `connection`"):
        asyncio.run(LlmExecutor().execute(llm_request(model="m", prompt="x"), RecordingContext()))


async def test_outputs_are_json(server: LoopbackServer, llm: LlmExecutor) -> None:
    out: Mapping[str, Any] = await ask(llm, model="json-echo", prompt="x y", responseSchema=SCHEMA)
    assert json.loads(json.dumps(dict(out))) == dict(out)


async def test_a_connection_key_never_goes_to_another_base_url(llm: LlmExecutor) -> None:
    """`baseUrl` (rendered, maybe from an input) cannot send a connection's key elsewhere."""
    with serve() as elsewhere:
        with pytest.raises(InvalidTaskConfig, match="origin"):
            await ask(
                llm,
                model="echo",
                prompt="x",
                baseUrl=f"http://localhost:{elsewhere.port}/v1",
                allowHosts=["localhost"],
            )
        assert elsewhere.requests == []


async def test_a_base_url_on_the_connection_origin_is_used(
    server: LoopbackServer, llm: LlmExecutor
) -> None:
    out = await ask(llm, model="echo", prompt="hi", baseUrl=f"http://127.0.0.1:{server.port}/v1/")
    assert out["content"] == "hi"
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
