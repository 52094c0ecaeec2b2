"""Connections: named endpoints a task refers to by name (DESIGN.md §13).

A task says `connection: warehouse`; where `warehouse` points (its URL, user,
password and extra settings) is defined once outside the pipeline: the
`WHENFLOW_CONN_WAREHOUSE` variable (Airflow's convention) or a connections
file. Executors receive a `ConnectionResolver` and never read the
environment themselves. A connection's password is a secret: masked like one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, unquote_plus, urlsplit

from whenflow.domain.errors import WhenflowError

CONNECTION_ENV_PREFIX = "WHENFLOW_CONN_"
CONNECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_SETTINGS = ("password", "apiKey", "token", "session_token")
"""Settings (in the URL's query string or in `extra`) whose values are secrets."""


@dataclass(frozen=True, slots=True)
class Connection:
    """One named connection.

    `url` is the whole URL as configured (for `sql`: a SQLAlchemy URL; for
    `http`/`llm`: a base URL). `extra` holds settings a URL cannot carry
    (headers, a model name, an API key, an S3 endpoint...), from the file.
    """

    name: str
    url: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str | None:
        return urlsplit(self.url).hostname

    @property
    def port(self) -> int | None:
        return urlsplit(self.url).port

    @property
    def login(self) -> str | None:
        user = urlsplit(self.url).username
        return unquote(user) if user is not None else None

    @property
    def password(self) -> str | None:
        """The URL's password (percent-decoded), or `extra["password"]`."""
        password = urlsplit(self.url).password
        if password is not None:
            return unquote(password)
        value = self.extra.get("password")
        return str(value) if value is not None else None

    def secrets(self) -> list[str]:
        """The values to mask wherever this connection's use could show them."""
        parts = urlsplit(self.url)
        raw = parts.password  # as written in the URL: maybe percent-encoded
        candidates: list[Any] = [self.password, raw, *(self.extra.get(k) for k in SECRET_SETTINGS)]
        for pair in parts.query.split("&"):  # libpq's ?password=, S3's ?session_token=
            key, _, value = pair.partition("=")
            if unquote_plus(key) in SECRET_SETTINGS:
                candidates.extend((unquote_plus(value), value))
        found: list[str] = []
        for value in candidates:
            if value and str(value) not in found:
                found.append(str(value))
        return found


class UnknownConnection(WhenflowError):
    """A task names a connection that is not defined."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = f" (defined: {', '.join(sorted(known))})" if known else ""
        super().__init__(
            f"connection {name!r} is not defined{hint}: set "
            f"{CONNECTION_ENV_PREFIX}{name.upper()} to its URL, or add it to the connections file"
        )


class ConnectionResolver(Protocol):
    """Where executors look connections up."""

    def get(self, name: str) -> Connection:
        """The connection called `name`; raises UnknownConnection."""
        ...

    def names(self) -> list[str]:
        """Every defined connection's name, sorted."""
        ...


class NoConnections:
    """A resolver that knows no connection (executors built without a configuration)."""

    def get(self, name: str) -> Connection:
        """Always raises UnknownConnection."""
        raise UnknownConnection(name)

    def names(self) -> list[str]:
        """No names."""
        return []
