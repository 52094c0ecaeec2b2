"""Where an `http` or `llm` request goes: the task's URL, its connection, and what they allow.

A connection (DESIGN.md §13) gives a base URL, credentials and headers; a
task's relative `url` is joined to the base path (`users/1` under
`https://api.example.com/v1` is `https://api.example.com/v1/users/1`). An
absolute `url` with a connection must stay on the connection's origin, so
its credentials never travel elsewhere. A connection permits its own host
through the egress policy, plus its `allowHosts` extra.

`Scrubber` hides a connection's secrets (password, API key, token) in what
the executor returns, logs and raises, whether or not the engine's mask
knows them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from whenflow.domain.connections import Connection, ConnectionResolver, UnknownConnection
from whenflow.executors.egress_policy import EgressPolicy
from whenflow.executors.errors import InvalidTaskConfig

MASK = "***"
_MIN_MASKED = 4


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved endpoint: the full URL, headers to send, and the policy to send them under."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    origin_headers: tuple[str, ...] = ()
    """Headers that came from the connection: dropped on a redirect to another origin."""
    policy: EgressPolicy = field(default_factory=EgressPolicy)
    secrets: tuple[str, ...] = ()


def lookup(
    task_type: str, resolver: ConnectionResolver | None, name: str | None
) -> Connection | None:
    """The connection `name` (None when the task names none); raises InvalidTaskConfig."""
    if name is None:
        return None
    if resolver is None:
        raise InvalidTaskConfig(
            task_type,
            f"`connection: {name}` cannot be looked up: this whenflow runs its executors "
            "without connections configured; define WHENFLOW_CONN_"
            f"{name.upper()} and run through the whenflow CLI or services",
        )
    try:
        return resolver.get(name)
    except UnknownConnection as exc:
        raise InvalidTaskConfig(task_type, str(exc)) from None


def base_url(connection: Connection) -> str:
    """The connection's URL without its user and password."""
    parts = urlsplit(connection.url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def connection_policy(connection: Connection) -> EgressPolicy:
    """Its own host, plus the entries of its `allowHosts` extra."""
    entries = [connection.host] if connection.host else []
    extra = connection.extra.get("allowHosts") or []
    if isinstance(extra, str):
        extra = [extra]
    return EgressPolicy.from_entries([*entries, *(str(e) for e in extra)])


def connection_headers(connection: Connection) -> dict[str, str]:
    """`headers` from its extra, then Basic auth (user:password) or a Bearer `token`."""
    headers = {str(k): str(v) for k, v in dict(connection.extra.get("headers") or {}).items()}
    token = connection.extra.get("token")
    if token:
        headers.setdefault("Authorization", f"Bearer {token}")
    elif connection.login is not None or urlsplit(connection.url).password is not None:
        pair = f"{connection.login or ''}:{connection.password or ''}".encode()
        headers.setdefault("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
    return headers


def join(task_type: str, base: str, url: str | None) -> str:
    """`url` under `base`: relative ones joined to the base path, absolute ones on its origin."""
    if not url:
        return base
    parts = urlsplit(url)
    if parts.scheme:
        origin = urlsplit(base)
        if (parts.scheme, parts.netloc) != (origin.scheme, origin.netloc):
            raise InvalidTaskConfig(
                task_type,
                f"`url` {url!r} is not on its connection's origin {origin.scheme}://"
                f"{origin.netloc}: write a path relative to the connection, or drop "
                "`connection` for a URL elsewhere",
            )
        return url
    return base.rstrip("/") + "/" + url.lstrip("/")


def check_url(task_type: str, url: str) -> None:
    """Raises InvalidTaskConfig unless `url` is an absolute http(s) URL."""
    try:
        parsed = urlsplit(url)
        host = parsed.hostname
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise InvalidTaskConfig(task_type, f"`url` {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise InvalidTaskConfig(
            task_type,
            f"`url` {url!r} must be an absolute http:// or https:// URL "
            "(or a path under the task's `connection`)",
        )


class Scrubber:
    """Replaces known secret values by `***` in text and nested values."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        found = {s for s in secrets if len(s) >= _MIN_MASKED}
        self._secrets = sorted(found, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def value(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def error(self, exc: BaseException) -> BaseException:
        """`exc` with its message scrubbed (in place)."""
        if self._secrets and exc.args:
            exc.args = tuple(self.text(a) if isinstance(a, str) else a for a in exc.args)
        return exc


def secrets_of(connection: Connection | None, headers: Mapping[str, str]) -> tuple[str, ...]:
    """A connection's secrets and the credentials of the headers built from it."""
    if connection is None:
        return ()
    found = list(connection.secrets())
    auth = headers.get("Authorization", "")
    _, _, credential = auth.partition(" ")
    if credential:
        found.append(credential)
    return tuple(found)
