"""Where `{{ secret('API_TOKEN') }}` reads: the environment, then a secrets file.

- `WHENFLOW_SECRET_API_TOKEN`, a variable (`EnvSecretStore`);
- the secrets file `WHENFLOW_SECRETS_FILE` names, YAML mapping a name to
  its value (`API_TOKEN: s3cr3t`), mode 0600 or stricter (`FileSecretStore`).

A variable wins over the file. Each implements the engine's `SecretStore`
port, so a vault can take their place without the engine changing;
`secret_store()` is the one services use.

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
from pathlib import Path

from whenflow.domain.errors import StoreSettingsError
from whenflow.domain.secrets import SECRET_ENV_PREFIX
from whenflow.storage.private_files import read_private_yaml

SECRETS_FILE_VARIABLE = "WHENFLOW_SECRETS_FILE"

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


class SecretsFileError(StoreSettingsError):
    """The secrets file cannot be used; the message names the file and the fix."""


class FileSecretStore:
    """Secrets from a YAML file of `NAME: value`, read once, at the first look-up."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._values: dict[str, str] | None = None

    def get(self, name: str) -> str | None:
        """The secret's value, or None; raises SecretsFileError for an unusable file."""
        return self._load().get(name) if _NAME.match(name) else None

    def describe(self, name: str) -> str:
        return f"add {name} to the secrets file {self.path}"

    def _load(self) -> dict[str, str]:
        if self._values is None:
            self._values = read_secrets_file(self.path)
        return self._values


class LayeredSecretStore:
    """The environment's secrets over the secrets file's."""

    def __init__(self, environment: EnvSecretStore, file: FileSecretStore | None) -> None:
        self.environment = environment
        self.file = file

    def get(self, name: str) -> str | None:
        found = self.environment.get(name)
        if found is None and self.file is not None:
            found = self.file.get(name)
        return found

    def describe(self, name: str) -> str:
        where = self.environment.describe(name)
        return where if self.file is None else f"{where}, or {self.file.describe(name)}"


def secret_store(environ: Mapping[str, str] | None = None) -> LayeredSecretStore:
    """The secrets of this process: variables, then `WHENFLOW_SECRETS_FILE` if set.

    Raises SecretsFileError when the variable names a file that does not exist.
    """
    env = os.environ if environ is None else environ
    chosen = env.get(SECRETS_FILE_VARIABLE) or None
    file = None
    if chosen is not None:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise SecretsFileError(
                f"{SECRETS_FILE_VARIABLE}: the secrets file {str(path)!r} does not exist; "
                "create it (mode 600) or unset the variable"
            )
        file = FileSecretStore(path)
    return LayeredSecretStore(EnvSecretStore(environ), file)


def read_secrets_file(path: Path) -> dict[str, str]:
    """The file's secrets by name; raises SecretsFileError.

    The file must be private to its owner (no group or other permission bits).
    """
    data = read_private_yaml(
        path,
        "secrets file",
        SecretsFileError,
        "the secrets file may be read by others (mode {mode})",
    )
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SecretsFileError(f"{path}: a secrets file maps names to values (NAME: value)")
    values: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise SecretsFileError(
                f"{path}: {name!r} is not a secret name: use letters, digits and _"
            )
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise SecretsFileError(f"{path}: the value of {name} must be text")
        values[name] = str(value)
    return values
