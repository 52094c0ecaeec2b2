"""The `llm` task block, read and checked (no I/O, no httpx: `whenflow validate` stays fast)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whenflow.executors.egress_policy import EgressPolicy
from whenflow.executors.http_config import parse_allow_hosts, parse_connection, parse_timeout

DEFAULT_TIMEOUT_S = 120.0
_FIELDS = (
    "connection",
    "baseUrl",
    "apiKey",
    "model",
    "prompt",
    "system",
    "messages",
    "temperature",
    "maxTokens",
    "responseSchema",
    "timeout",
    "allowHosts",
)
RENDERED_FIELDS = ("prompt", "system", "messages", "model", "apiKey", "baseUrl")
"""The fields the engine renders as templates before each attempt."""


@dataclass(frozen=True, slots=True)
class LlmConfig:
    connection: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    messages: tuple[Mapping[str, Any], ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    schema: Mapping[str, Any] | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    allow: EgressPolicy = field(default_factory=EgressPolicy)


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def parse_llm_config(
    config: Mapping[str, Any], problems: list[str], *, rendered: bool
) -> LlmConfig:
    """Read an `llm` task block, appending each problem to `problems`."""
    for key in config:
        if key not in _FIELDS:
            problems.append(f"unknown field {key!r}; known fields: {', '.join(_FIELDS)}")
    prompt = config.get("prompt")
    raw_messages = config.get("messages")
    system = config.get("system")
    messages: list[Mapping[str, Any]] = []
    if (prompt is None) == (raw_messages is None):
        problems.append("give exactly one of `prompt` (text) or `messages` (a list)")
    elif prompt is not None:
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append("`prompt` must be non-empty text")
        if system is not None:
            messages.append({"role": "system", "content": str(system)})
        messages.append({"role": "user", "content": str(prompt)})
    elif not (not rendered and _templated(raw_messages)):
        messages = _messages(raw_messages, problems)
        if system is not None:
            problems.append("`system` goes with `prompt`; put a system message in `messages`")
    for name in ("connection", "baseUrl", "apiKey", "model"):
        value = config.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"`{name}` must be non-empty text")
    temperature = config.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float)
    ):
        problems.append("`temperature` must be a number (like 0.2)")
        temperature = None
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        problems.append("`maxTokens` must be a whole number >= 1")
        max_tokens = None
    schema = _schema(config.get("responseSchema"), problems)
    base = config.get("baseUrl")
    api_key = config.get("apiKey")
    model = config.get("model")
    return LlmConfig(
        connection=parse_connection(config.get("connection"), problems),
        base_url=base if isinstance(base, str) and base.strip() else None,
        api_key=api_key if isinstance(api_key, str) and api_key.strip() else None,
        model=model if isinstance(model, str) and model.strip() else None,
        messages=tuple(messages),
        temperature=float(temperature) if temperature is not None else None,
        max_tokens=max_tokens,
        schema=schema,
        timeout_s=parse_timeout(config.get("timeout"), problems, DEFAULT_TIMEOUT_S),
        allow=parse_allow_hosts(config.get("allowHosts"), problems),
    )


def _messages(value: Any, problems: list[str]) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not value:
        problems.append("`messages` must be a non-empty list of {role, content}")
        return []
    found: list[Mapping[str, Any]] = []
    for index, message in enumerate(value):
        if (
            not isinstance(message, Mapping)
            or not isinstance(message.get("role"), str)
            or "content" not in message
        ):
            problems.append(f"`messages[{index}]` must be a mapping with `role` and `content`")
            continue
        content = message["content"]
        found.append(
            {**message, "content": content if isinstance(content, str) else json.dumps(content)}
        )
    return found


def _schema(value: Any, problems: list[str]) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.append("`responseSchema` must be a JSON Schema (a mapping)")
        return None
    import jsonschema  # here: only pipelines with an `llm` task pay for it

    try:
        jsonschema.Draft202012Validator.check_schema(dict(value))
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        problems.append(f"`responseSchema` is not a valid JSON Schema at {where}: {exc.message}")
        return None
    return value
