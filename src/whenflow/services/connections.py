"""Connections for the CLI, the executors and the secret mask (DESIGN.md §13).

- `executor_environment()` is what every executor factory receives: the
  process's connections (variables over the connections file) and its
  `WHENFLOW_*` settings, secrets and connection URLs left out.
- `seed_mask()` puts the password (and `apiKey`/`token`) of every connection
  a pipeline's tasks name into the execution's SecretMask before it starts,
  so they are masked in everything stored or shown, like a `secret()`.
- `list_connections()` / `probe_connection()` back `whenflow connections`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from whenflow.domain.connections import CONNECTION_ENV_PREFIX, Connection, ConnectionResolver
from whenflow.domain.errors import WhenflowError
from whenflow.domain.secrets import SECRET_ENV_PREFIX
from whenflow.domain.task_io import Executor, ExecutorEnvironment
from whenflow.dsl.program import PipelineProgram
from whenflow.dsl.secret_names import program_secret_names
from whenflow.engine.ports import SecretStore
from whenflow.engine.secret_masking import MASK, SecretMask
from whenflow.storage.connections import (
    CONNECTIONS_FILE_VARIABLE,
    LayeredConnections,
    connection_secrets,
    resolver,
)

SETTINGS_PREFIX = "WHENFLOW_"


def process_connections() -> LayeredConnections:
    """The connections of this process (`--connections`/`WHENFLOW_CONNECTIONS_FILE` read now)."""
    return resolver(os.environ.get(CONNECTIONS_FILE_VARIABLE) or None)


def executor_environment(connections: ConnectionResolver | None = None) -> ExecutorEnvironment:
    """What executor factories get: `connections` (the process's by default) and settings."""
    settings = {
        key: value
        for key, value in os.environ.items()
        if key.startswith(SETTINGS_PREFIX)
        and not key.startswith((SECRET_ENV_PREFIX, CONNECTION_ENV_PREFIX))
    }
    return ExecutorEnvironment(
        connections=connections if connections is not None else process_connections(),
        settings=settings,
    )


def used_connections(program: PipelineProgram) -> list[str]:
    """The `connection:` names of the program's tasks and its sub-pipelines', sorted."""
    return sorted(set(_connection_names(program)))


def _connection_names(program: PipelineProgram) -> Iterator[str]:
    for node in program.nodes:
        name = node.definition.task.config.get("connection")
        if isinstance(name, str) and name:
            yield name
        if node.child is not None:
            yield from _connection_names(node.child)


def seed_mask(
    program: PipelineProgram,
    connections: ConnectionResolver,
    secrets: SecretStore | None = None,
) -> SecretMask:
    """A SecretMask holding, before the first node runs, the secrets of the connections
    the program uses and the values of its constant `secret('NAME')` calls.

    So a secret first read by a later node is masked in what earlier nodes
    wrote. A connection or secret that is not defined is left to the node
    that needs it (it fails then, saying where to define it); an unusable
    connections or secrets file raises its StoreSettingsError.
    """
    mask = SecretMask()
    values, _unknown = connection_secrets(connections, used_connections(program))
    if secrets is not None:
        for name in program_secret_names(program):
            value = secrets.get(name)
            if value is not None:
                values.append(value)
    for value in values:
        mask.reveal(value)
    return mask


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """One connection as `whenflow connections list` shows it: never a password."""

    name: str
    scheme: str
    host: str | None
    url: str
    """The URL with its password replaced by `***`."""
    origin: str
    extra_keys: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scheme": self.scheme,
            "host": self.host,
            "url": self.url,
            "origin": self.origin,
            "extra": list(self.extra_keys),
        }


def list_connections(connections: LayeredConnections | None = None) -> list[ConnectionView]:
    """Every defined connection, sorted by name; raises ConnectionsFileError."""
    found = connections or process_connections()
    views = []
    for name in found.names():
        connection = found.get(name)
        views.append(
            ConnectionView(
                name=connection.name,
                scheme=connection.scheme,
                host=connection.host,
                url=redacted_url(connection),
                origin=found.origin(name),
                extra_keys=tuple(sorted(connection.extra)),
            )
        )
    return views


def redacted_url(connection: Connection) -> str:
    """The connection's URL with the password (and any other secret of it) masked."""
    parts = urlsplit(connection.url)
    url = connection.url
    if parts.password is not None:
        user = parts.username or ""
        hosts = parts.netloc.rpartition("@")[2]  # as written: `h1:7077,h2:7077` has no one port
        netloc = f"{user}:{MASK}@{hosts}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    mask = SecretMask()
    for value in connection.secrets():
        mask.reveal(value)
    return mask.text(url)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What `whenflow connections test NAME` found."""

    name: str
    tested: bool
    """False when no installed executor can test this scheme: the name only resolved."""
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": True, "tested": self.tested, "message": self.message}


async def probe_connection(
    name: str, executors: Sequence[Executor], connections: ConnectionResolver
) -> ProbeResult:
    """Reach the connection `name` through the first executor that tests its scheme.

    Raises UnknownConnection, ConnectionsFileError, or ConnectionTestFailed
    (the endpoint's words, masked).
    """
    connection = connections.get(name)
    mask = SecretMask()
    for value in connection.secrets():
        mask.reveal(value)
    scheme = connection.scheme.partition("+")[0].lower()
    for executor in executors:
        schemes: Sequence[str] = getattr(executor, "connection_schemes", ())
        tester = getattr(executor, "test_connection", None)
        if scheme in schemes and callable(tester):
            try:
                answer = await tester(connection)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                raise ConnectionTestFailed(name, mask.text(reason)) from None
            return ProbeResult(name, True, mask.text(str(answer)))
    return ProbeResult(
        name,
        False,
        f"resolves to {redacted_url(connection)}; no installed executor tests "
        f"{scheme or 'schemeless'!r} URLs, so it was not reached",
    )


async def probe(name: str) -> ProbeResult:
    """`probe_connection` with this process's connections and installed executors."""
    from whenflow.executors.registry import default_registry

    connections = process_connections()
    registry = default_registry(executor_environment(connections))
    try:
        return await probe_connection(name, registry.executors(), connections)
    finally:
        for executor in registry.executors():
            close = getattr(executor, "close", None)
            if callable(close):
                close()


class ConnectionTestFailed(WhenflowError):
    """Testing a connection failed; the message holds the endpoint's own words, masked."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"connection {name!r} failed its test: {reason}")
        self.name = name
