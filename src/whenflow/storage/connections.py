"""Where connections are defined: `WHENFLOW_CONN_<NAME>` variables (DESIGN.md §13).

`EnvironmentConnections` implements the `ConnectionResolver` the executors
receive: `connection: warehouse` reads `WHENFLOW_CONN_WAREHOUSE`, a URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from whenflow.domain.connections import (
    CONNECTION_ENV_PREFIX,
    CONNECTION_NAME,
    Connection,
    UnknownConnection,
)


class EnvironmentConnections:
    """Connections from the environment (or from `environ`, when given)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def _variables(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def get(self, name: str) -> Connection:
        """The connection `name`; raises UnknownConnection when no variable defines it."""
        if CONNECTION_NAME.match(name):
            url = self._variables().get(CONNECTION_ENV_PREFIX + name.upper())
            if url:
                return Connection(name=name, url=url)
        raise UnknownConnection(name, self.names())

    def names(self) -> list[str]:
        """Every name a `WHENFLOW_CONN_*` variable defines, lower-cased and sorted."""
        prefix = CONNECTION_ENV_PREFIX
        return sorted(k[len(prefix) :].lower() for k in self._variables() if k.startswith(prefix))
