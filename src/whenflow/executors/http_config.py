"""The `http` task block, read and checked (no I/O, no httpx: `whenflow validate` stays fast)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whenflow.domain.durations import parse_duration
from whenflow.executors.egress_policy import EgressPolicy

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_MAX_INLINE_BYTES = 1024 * 1024
"""Bodies larger than this go to the artifact store as the file output `body`."""
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_FIELDS = (
    "method",
    "url",
    "headers",
    "query",
    "json",
    "data",
    "timeout",
    "expectStatus",
    "allowHosts",
    "connection",
    "maxRedirects",
    "maxInlineBytes",
)
RENDERED_FIELDS = ("url", "headers", "query", "json", "data")
"""The fields the engine renders as templates before each attempt."""


@dataclass(frozen=True, slots=True)
class HttpConfig:
    method: str = "GET"
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, Any] = field(default_factory=dict)
    json_body: Any = None
    has_json: bool = False
    data: Any = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    expect: tuple[int, ...] | None = None
    allow: EgressPolicy = field(default_factory=EgressPolicy)
    connection: str | None = None
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES


def form_value(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def parse_timeout(value: Any, problems: list[str], default: float) -> float:
    """A `timeout` field: seconds or a duration (`30s`, `2m`), over 0."""
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError, AttributeError) as exc:
        problems.append(f"`timeout`: {exc}")
        return default
    if seconds <= 0:
        problems.append("`timeout` must be longer than 0s")
        return default
    return seconds


def parse_allow_hosts(value: Any, problems: list[str]) -> EgressPolicy:
    """`allowHosts`: a list of host names, `*.domain` wildcards, IP addresses or CIDRs."""
    if value is None:
        return EgressPolicy()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append("`allowHosts` must be a list of host names, IP addresses or CIDRs")
        return EgressPolicy()
    try:
        return EgressPolicy.from_entries(value)
    except ValueError as exc:
        problems.append(str(exc))
        return EgressPolicy()


def parse_connection(value: Any, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append("`connection` must be the name of a connection")
        return None
    return value.strip()


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def parse_http_config(
    config: Mapping[str, Any], problems: list[str], max_inline: int, *, rendered: bool
) -> HttpConfig:
    """Read an `http` task block, appending each problem to `problems`.

    Before rendering (`rendered=False`, load time) a templated value of a
    rendered field is not type-checked: only its final value can be.
    """
    for key in config:
        if key not in _FIELDS:
            problems.append(f"unknown field {key!r}; known fields: {', '.join(_FIELDS)}")
    method = config.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        problems.append(f"`method` must be one of {', '.join(METHODS)}")
        method = "GET"
    url = config.get("url")
    if url is not None and not isinstance(url, str):
        problems.append("`url` must be text")
        url = None
    headers = _string_map(config.get("headers"), "headers", problems, rendered)
    query = config.get("query") or {}
    if not isinstance(query, Mapping) and not (not rendered and _templated(query)):
        problems.append("`query` must be a mapping of name: value")
        query = {}
    elif isinstance(query, Mapping):
        query = _query(query, problems)
    if "json" in config and "data" in config:
        problems.append("give `json` or `data`, not both")
    data = config.get("data")
    if data is not None and not isinstance(data, Mapping | str | bytes):
        problems.append("`data` must be a form mapping or raw text")
        data = None
    if url is None and config.get("connection") is None:
        problems.append("give `url` (or a `connection` whose URL is the base)")
    expect = _expect_status(config.get("expectStatus"), problems)
    max_redirects = _count(config.get("maxRedirects"), DEFAULT_MAX_REDIRECTS)
    inline = _count(config.get("maxInlineBytes"), max_inline)
    for name, number in (("maxRedirects", max_redirects), ("maxInlineBytes", inline)):
        if number is None:
            problems.append(f"`{name}` must be a whole number >= 0")
    return HttpConfig(
        method=method.upper(),
        url=url,
        headers=headers,
        query=query if isinstance(query, Mapping) else {},
        json_body=config.get("json"),
        has_json="json" in config,
        data=data,
        timeout_s=parse_timeout(config.get("timeout"), problems, DEFAULT_TIMEOUT_S),
        expect=expect,
        allow=parse_allow_hosts(config.get("allowHosts"), problems),
        connection=parse_connection(config.get("connection"), problems),
        max_redirects=max_redirects if max_redirects is not None else DEFAULT_MAX_REDIRECTS,
        max_inline_bytes=inline if inline is not None else max_inline,
    )


def _string_map(value: Any, name: str, problems: list[str], rendered: bool) -> dict[str, str]:
    if value is None:
        return {}
    if not rendered and _templated(value):
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"`{name}` must be a mapping of name: value")
        return {}
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            problems.append(f"`{name}`: {key!r} is not a header name")
        elif isinstance(item, dict | list) or item is None:
            problems.append(f"`{name}.{key}` must be text or a number")
        else:
            result[key] = _scalar(item)
    return result


def _query(value: Mapping[Any, Any], problems: list[str]) -> dict[str, Any]:
    """Query values: scalars, or lists of scalars (the name repeats); as text."""
    result: dict[str, Any] = {}
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        if any(isinstance(v, dict | list) for v in items):
            problems.append(f"`query.{key}` must be a value or a list of values")
            continue
        texts = [_scalar(v) for v in items]
        result[str(key)] = texts if isinstance(item, list) else texts[0]
    return result


def _expect_status(value: Any, problems: list[str]) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    good = [v for v in items if isinstance(v, int) and not isinstance(v, bool) and 100 <= v < 600]
    if len(good) != len(items) or not good:
        problems.append("`expectStatus` must be a status code (100-599) or a list of them")
        return None
    return tuple(good)


def _count(value: Any, default: int) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
