"""Secrets from the environment: `{{ secret('API_TOKEN') }}` reads `WHENFLOW_SECRET_API_TOKEN`.

The one backend of the core engine. It implements the engine's `SecretStore`
port, so a vault can take its place without the engine changing.

Secrets live only here once whenflow starts: the first store takes every
`WHENFLOW_SECRET_*` variable out of `os.environ` (and so out of the C
environment), into one private table for the process. An in-process python
task then cannot read them from `os.environ`, and no subprocess inherits
them. A variable set later (by a test, an embedding program) is taken when
`get` first asks for it.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from collections.abc import Mapping

from whenflow.domain.secrets import SECRET_ENV_PREFIX

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_taken: dict[str, str] = {}
"""The secret variables taken out of this process's environment, by variable name."""
_taken_lock = threading.Lock()


def take_from_environment(prefix: str = SECRET_ENV_PREFIX) -> None:
    """Move every `<prefix>*` variable from `os.environ` into the process's secret table."""
    with _taken_lock:
        for key in [k for k in os.environ if k.startswith(prefix)]:
            _scrub_c_environment(key)
            value = os.environ.pop(key, None)
            if value is not None:
                _taken[key] = value


def _scrub_c_environment(key: str) -> None:
    """Zero the variable's value where the C library keeps it.

    `unsetenv` (what `os.environ.pop` calls) only unlinks the variable: the
    text stays in the block the process started with, which
    `/proc/<pid>/environ` shows to this process, its tasks and the user's
    other processes. Overwriting it in place empties that view too.
    """
    try:
        libc = ctypes.CDLL(None)
        getenv = libc.getenv
        getenv.restype = ctypes.c_void_p
        getenv.argtypes = [ctypes.c_char_p]
        address = getenv(os.fsencode(key))
        if address:
            ctypes.memset(address, 0, len(ctypes.string_at(address)))
    except (OSError, AttributeError, TypeError, ValueError):
        return  # no C library to reach: the variable is still removed from the environment


class EnvSecretStore:
    """Reads `<prefix><NAME>`: from the environment, taken out of it, or from the mapping given."""

    def __init__(
        self, environ: Mapping[str, str] | None = None, prefix: str = SECRET_ENV_PREFIX
    ) -> None:
        """With no `environ`, the process's `<prefix>*` variables are taken out of `os.environ`."""
        self._prefix = prefix
        self._own = environ is None
        if environ is None:
            take_from_environment(prefix)
        self._environ = _taken if environ is None else environ

    def get(self, name: str) -> str | None:
        if not _NAME.match(name):
            return None
        key = self._prefix + name
        if self._own and key in os.environ:
            take_from_environment(self._prefix)
        return self._environ.get(key)

    def describe(self, name: str) -> str:
        if not _NAME.match(name):
            return "secret names are letters, digits and _"
        return f"set the environment variable {self._prefix}{name}"
