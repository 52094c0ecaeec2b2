"""The `llm` executor: one OpenAI-compatible chat completion (`POST {base}/chat/completions`).

    task:
      type: llm
      connection: deepseek             # base URL + API key (password, or `apiKey` extra)
      model: deepseek-chat             # default: the connection's `model` extra
      prompt: "Summarise: {{ fetch.text }}"      # or `messages: [{role, content}, ...]`
      system: You are a careful analyst.         # optional, with `prompt`
      temperature: 0.2
      maxTokens: 800
      responseSchema: {type: object, required: [score], properties: {score: {type: number}}}
      timeout: 120s

Without a connection, `baseUrl` and `apiKey` (`"{{ secret('LLM_KEY') }}"`) say
the same. Outputs: `content` (the answer's text), `json` (with
`responseSchema`: the answer parsed and validated, else null), `usage` (the
server's token counts) and `model` (the model that answered).

With `responseSchema` the request asks for a JSON object
(`response_format: {type: json_object}`, which DeepSeek and OpenAI accept)
and a system message gives the schema; the answer is parsed (a surrounding
```json fence is tolerated) and validated with `jsonschema`.

Failures: `HttpTimeout`, `HttpConnectionFailed`, `HttpServerError` (5xx),
`HttpRateLimited` (429, `retry_after_s` from Retry-After), `HttpStatusError`
(401 and other 4xx), `LlmAnswerError` (not chat-completions JSON, or not the
JSON the schema asks for), `LlmSchemaViolation`. The request passes the same
egress policy as `http` tasks; the connection permits its own host. The API
key never appears in outputs, logs or errors.
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from whenflow.domain.connections import ConnectionResolver
from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import ExecutorEnvironment, TaskContext, TaskRequest, TaskResult
from whenflow.executors.egress_policy import EgressPolicy
from whenflow.executors.errors import InvalidTaskConfig
from whenflow.executors.http_errors import LlmAnswerError, LlmSchemaViolation, excerpt
from whenflow.executors.http_target import Scrubber, base_url, check_url, connection_policy, lookup
from whenflow.executors.llm_config import LlmConfig, parse_llm_config

if TYPE_CHECKING:
    import httpx

MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""A chat-completions answer larger than this is refused, not read into memory."""
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*)\n\s*```\s*$", re.DOTALL)


class LlmExecutor:
    """Runs `llm` tasks: chat completions over httpx on the engine's loop."""

    task_type = "llm"

    def __init__(
        self,
        connections: ConnectionResolver | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """
        Args:
            connections: Where `connection: NAME` is looked up (None: naming one fails).
            ssl_context: The certificates HTTPS trusts (default: certifi's bundle).
        """
        self._connections = connections
        self._ssl_context = ssl_context

    def check(self, task: TaskSpec) -> list[str]:
        """Problems of the task block: fields, types, a `responseSchema` that is no schema."""
        problems: list[str] = []
        parse_llm_config(task.config, problems, rendered=False)
        return problems

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Ask the model; raise an `http_errors` error for a failed attempt."""
        problems: list[str] = []
        config = parse_llm_config(request.task.config, problems, rendered=True)
        if problems:
            raise InvalidTaskConfig("llm", "; ".join(problems))
        connection = lookup("llm", self._connections, config.connection)
        policy = config.allow
        key = config.api_key
        model = config.model
        if connection is not None:
            base = _on_origin(config.base_url, connection.name, base_url(connection))
            policy = policy.merged(connection_policy(connection))
            key = key or connection.password or _text(connection.extra.get("apiKey"))
            model = model or _text(connection.extra.get("model"))
        elif config.base_url is not None:
            base = config.base_url
        else:
            raise InvalidTaskConfig("llm", "give `connection` (or `baseUrl` and `apiKey`)")
        if not model:
            raise InvalidTaskConfig("llm", "give `model` (or a `model` extra on the connection)")
        url = base.rstrip("/") + "/chat/completions"
        check_url("llm", url)
        secrets = [key] if key else []
        if connection is not None:
            secrets.extend(connection.secrets())
        scrub = Scrubber(tuple(secrets))
        try:
            return await self._ask(config, url, key, model, policy, ctx, scrub)
        except Exception as exc:
            raise scrub.error(exc) from None

    async def _ask(
        self,
        config: LlmConfig,
        url: str,
        key: str | None,
        model: str,
        policy: EgressPolicy,
        ctx: TaskContext,
        scrub: Scrubber,
    ) -> TaskResult:
        from whenflow.executors.egress import (
            call_guard,
            guarded_client,
            send_following,
            status_error,
        )

        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        started = time.monotonic()
        client = guarded_client(policy, "llm", config.timeout_s, self._ssl_context)
        async with client:
            outgoing = client.build_request("POST", url, headers=headers, json=_body(config, model))
            async with call_guard("llm", outgoing, config.timeout_s):
                response = await send_following(client, outgoing, max_redirects=0)
                try:
                    body = await _read(response, url)
                finally:
                    await response.aclose()
        text = body.decode(response.charset_encoding or "utf-8", errors="replace")
        ctx.log(
            f"POST {url} -> {response.status_code} ({len(body)} bytes in "
            f"{time.monotonic() - started:.3f}s)"
        )
        if not 200 <= response.status_code < 300:
            raise status_error("llm", "POST", url, response, text)
        answer = _answer(url, text)
        outputs: dict[str, Any] = {
            "content": answer.content,
            "json": None,
            "usage": answer.usage,
            "model": answer.model or model,
        }
        if config.schema is not None:
            outputs["json"] = _validated(url, answer.content, config.schema)
        usage = answer.usage
        if usage:
            ctx.log(f"tokens: {json.dumps(usage, sort_keys=True)}")
        return TaskResult(outputs=scrub.value(outputs))


def _on_origin(base: str | None, name: str, own: str) -> str:
    """`base` when on the origin of the connection's URL `own` (its key goes there), else raise."""
    if base is None:
        return own
    ours, theirs = urlsplit(base), urlsplit(own)
    if (ours.scheme.lower(), ours.netloc.lower()) != (theirs.scheme.lower(), theirs.netloc.lower()):
        raise InvalidTaskConfig(
            "llm",
            f"`baseUrl` {base!r} is not on the origin {theirs.scheme}://{theirs.netloc} of "
            f"connection {name!r}, whose key must not go elsewhere: drop `baseUrl`, or drop "
            "`connection` and give `apiKey`",
        )
    return base


async def _read(response: httpx.Response, url: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise LlmAnswerError(url, f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class _Answer:
    content: str
    usage: dict[str, Any]
    model: str | None


def _answer(url: str, text: str) -> _Answer:
    """The first choice's content, usage and model of a chat-completions answer."""
    try:
        document = json.loads(text)
    except ValueError:
        raise LlmAnswerError(
            url, f"the answer is not JSON (not a chat-completions server?): {excerpt(text)}"
        ) from None
    try:
        choice = document["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LlmAnswerError(
            url, f"the answer has no choices[0].message.content: {excerpt(text)}"
        ) from None
    if not isinstance(content, str):
        raise LlmAnswerError(url, f"choices[0].message.content is not text: {excerpt(text)}")
    usage = document.get("usage")
    model = document.get("model")
    return _Answer(
        content=content,
        usage=dict(usage) if isinstance(usage, dict) else {},
        model=model if isinstance(model, str) else None,
    )


def _validated(url: str, content: str, schema: Mapping[str, Any]) -> Any:
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise LlmAnswerError(
            url,
            f"the model's answer is not the JSON `responseSchema` asks for ({exc}): "
            f"{excerpt(content)}",
        ) from None
    import jsonschema

    validator = jsonschema.Draft202012Validator(dict(schema))
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        shown = "; ".join(
            f"at {'/'.join(str(p) for p in e.absolute_path) or '(the top level)'}: {e.message}"
            for e in errors[:3]
        )
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise LlmSchemaViolation(
            url, f"the model's JSON does not match `responseSchema`: {shown}{more}"
        )
    return value


def _body(config: LlmConfig, model: str) -> dict[str, Any]:
    messages = [dict(m) for m in config.messages]
    body: dict[str, Any] = {"model": model, "messages": messages}
    if config.temperature is not None:
        body["temperature"] = config.temperature
    if config.max_tokens is not None:
        body["max_tokens"] = config.max_tokens
    if config.schema is not None:
        body["response_format"] = {"type": "json_object"}
        instruction = (
            "Answer with one JSON object only, no prose, matching this JSON Schema: "
            + json.dumps(config.schema, sort_keys=True)
        )
        messages.insert(0, {"role": "system", "content": instruction})
    return body


def _text(value: Any) -> str | None:
    return str(value) if value else None


def llm_executor(environment: ExecutorEnvironment) -> LlmExecutor:
    """The `llm` entry point of `whenflow.executors`."""
    return LlmExecutor(environment.connections)
