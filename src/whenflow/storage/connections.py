"""Where connections are defined (DESIGN.md §13): variables and a connections file.

- `WHENFLOW_CONN_<NAME>` holds a URL (Airflow's convention):
  `connection: warehouse` reads `WHENFLOW_CONN_WAREHOUSE`.
- The connections file, YAML, maps a name to its URL and extra settings:

      warehouse:
        url: postgresql://etl:s3cret@db.internal:5432/dw
      deepseek:
        url: https://api.deepseek.com
        apiKey: sk-...            # masked like a password
      scratch: sqlite:///scratch.db   # a bare URL is fine too

  It is `--connections FILE`, else `WHENFLOW_CONNECTIONS_FILE`, else
  `$WHENFLOW_HOME/connections.yaml` if it exists. It holds passwords, so
  whenflow refuses one that its group or others may read or write (`chmod
  600`), as ssh does with keys.

A variable wins over the file's entry of the same name. Names are letters,
digits and `_`, matched without regard to case. `LayeredConnections`
implements the `ConnectionResolver` the executors receive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from whenflow.domain.connections import (
    CONNECTION_ENV_PREFIX,
    CONNECTION_NAME,
    Connection,
    ConnectionResolver,
    UnknownConnection,
)
from whenflow.domain.errors import StoreSettingsError
from whenflow.storage.private_files import read_private_yaml

CONNECTIONS_FILE_VARIABLE = "WHENFLOW_CONNECTIONS_FILE"
DEFAULT_CONNECTIONS_FILE = "connections.yaml"


class ConnectionsFileError(StoreSettingsError):
    """The connections file cannot be used; the message names the file and the fix."""


class EnvironmentConnections:
    """Connections from the environment (or from `environ`, when given)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def _variables(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def get(self, name: str) -> Connection:
        """The connection `name`; raises UnknownConnection when no variable defines it."""
        found = self.find(name)
        if found is None:
            raise UnknownConnection(name, self.names())
        return found

    def find(self, name: str) -> Connection | None:
        """The connection `name`, or None."""
        if CONNECTION_NAME.match(name):
            url = self._variables().get(CONNECTION_ENV_PREFIX + name.upper())
            if url:
                where = f"${CONNECTION_ENV_PREFIX}{name.upper()}"
                return _parsed(Connection(name=name.lower(), url=url), where)
        return None

    def names(self) -> list[str]:
        """Every name a `WHENFLOW_CONN_*` variable defines, lower-cased and sorted."""
        prefix = CONNECTION_ENV_PREFIX
        return sorted(
            k[len(prefix) :].lower()
            for k, v in self._variables().items()
            if k.startswith(prefix) and v and CONNECTION_NAME.match(k[len(prefix) :])
        )


class FileConnections:
    """Connections from a YAML file, read once, at the first look-up."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._entries: dict[str, Connection] | None = None

    def get(self, name: str) -> Connection:
        """The connection `name`; raises UnknownConnection or ConnectionsFileError."""
        found = self.find(name)
        if found is None:
            raise UnknownConnection(name, self.names())
        return found

    def find(self, name: str) -> Connection | None:
        """The connection `name`, or None; raises ConnectionsFileError."""
        return self._load().get(name.lower())

    def names(self) -> list[str]:
        """The names the file defines, sorted; raises ConnectionsFileError."""
        return sorted(self._load())

    def _load(self) -> dict[str, Connection]:
        if self._entries is None:
            self._entries = read_connections_file(self.path)
        return self._entries


class LayeredConnections:
    """The environment's connections over the file's: the `ConnectionResolver` services use.

    The file is located and read at the first look-up that needs it, so a bad
    file fails the run that uses a connection, not `whenflow validate`.
    """

    def __init__(
        self,
        environment: EnvironmentConnections,
        file: FileConnections | None = None,
        *,
        locate: Callable[[], Path | None] | None = None,
    ) -> None:
        self.environment = environment
        self._file = file
        self._locate = locate

    @property
    def file(self) -> FileConnections | None:
        """The connections file in use, or None; raises ConnectionsFileError."""
        if self._file is None and self._locate is not None:
            path = self._locate()
            self._locate = None
            self._file = FileConnections(path) if path is not None else None
        return self._file

    def locate(self) -> None:
        """Find the connections file now (not read yet): raises ConnectionsFileError when
        the one named by `--connections` or the variable does not exist."""
        _ = self.file

    def get(self, name: str) -> Connection:
        """The connection `name`; raises UnknownConnection or ConnectionsFileError."""
        found = self.environment.find(name)
        if found is None and self.file is not None:
            found = self.file.find(name)
        if found is None:
            raise UnknownConnection(name, self.names())
        return found

    def names(self) -> list[str]:
        """Every defined name, from both sources, sorted."""
        names = set(self.environment.names())
        if self.file is not None:
            names.update(self.file.names())
        return sorted(names)

    def origin(self, name: str) -> str:
        """Where `name` is defined: the variable, or the file (for `connections list`)."""
        if self.environment.find(name) is not None:
            return f"${CONNECTION_ENV_PREFIX}{name.upper()}"
        return str(self.file.path) if self.file is not None else "?"


def connections_file(
    explicit: str | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The connections file to read: `explicit`, the variable, or the home's, or None.

    An explicit file (or the variable's) must exist; the home's is optional.
    Raises ConnectionsFileError.
    """
    env = os.environ if environ is None else environ
    chosen = explicit or env.get(CONNECTIONS_FILE_VARIABLE) or None
    if chosen is not None:
        path = Path(chosen).expanduser()
        if not path.is_file():
            where = "--connections" if explicit else CONNECTIONS_FILE_VARIABLE
            raise ConnectionsFileError(
                f"{where}: the connections file {str(path)!r} does not exist; "
                "create it or point to another file"
            )
        return path
    home = env.get("WHENFLOW_HOME") or str(Path.home() / ".whenflow")
    default = Path(home).expanduser() / DEFAULT_CONNECTIONS_FILE
    return default if default.is_file() else None


def resolver(
    explicit_file: str | None = None, environ: Mapping[str, str] | None = None
) -> LayeredConnections:
    """The connections of this process: variables over the connections file (if any).

    Never raises: the file is located and read when a look-up first needs it.
    """
    return LayeredConnections(
        EnvironmentConnections(environ), locate=lambda: connections_file(explicit_file, environ)
    )


def read_connections_file(path: Path) -> dict[str, Connection]:
    """The file's connections by lower-cased name; raises ConnectionsFileError.

    The file must be private to its owner (no group or other permission bits).
    """
    data = read_private_yaml(
        path,
        "connections file",
        ConnectionsFileError,
        "the connections file holds passwords but its mode is {mode}",
    )
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConnectionsFileError(
            f"{path}: a connections file maps names to a URL or to {{url: ..., ...}}"
        )
    connections: dict[str, Connection] = {}
    for name, entry in data.items():
        connection = _entry(path, name, entry)
        if connection.name in connections:
            raise ConnectionsFileError(f"{path}: connection {name!r} is defined twice")
        connections[connection.name] = connection
    return connections


def _entry(path: Path, name: Any, entry: Any) -> Connection:
    if not isinstance(name, str) or not CONNECTION_NAME.match(name):
        raise ConnectionsFileError(
            f"{path}: {name!r} is not a connection name: use letters, digits and _"
        )
    if isinstance(entry, str) and entry:
        return _parsed(Connection(name=name.lower(), url=entry), str(path))
    if isinstance(entry, dict) and isinstance(entry.get("url"), str) and entry["url"]:
        extra = {str(k): v for k, v in entry.items() if k != "url"}
        return _parsed(Connection(name=name.lower(), url=entry["url"], extra=extra), str(path))
    raise ConnectionsFileError(
        f"{path}: connection {name!r} needs a url: write `{name}: URL` or "
        f"`{name}: {{url: URL, ...}}`"
    )


def _parsed(connection: Connection, where: str) -> Connection:
    """`connection` once its URL parses; raises ConnectionsFileError (never showing the URL)."""
    try:
        connection.host  # noqa: B018 - raises ValueError for a malformed URL
    except ValueError as exc:
        raise ConnectionsFileError(
            f"{where}: the URL of connection {connection.name!r} is not a valid URL ({exc}); "
            "fix it (it is not shown: it may hold a password)"
        ) from None
    return connection


def connection_secrets(
    connections: ConnectionResolver, names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The values to mask for the connections `names`, and the names not defined.

    Raises ConnectionsFileError for an unusable connections file.
    """
    values: list[str] = []
    unknown: list[str] = []
    for name in names:
        try:
            values.extend(connections.get(name).secrets())
        except UnknownConnection:
            unknown.append(name)
    return values, unknown
