"""Secrets from the environment: `{{ secret('API_TOKEN') }}` reads `WHENFLOW_SECRET_API_TOKEN`.

The one backend of the core engine. It implements the engine's `SecretStore`
port, so a vault can take its place without the engine changing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from whenflow.domain.secrets import SECRET_ENV_PREFIX

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvSecretStore:
    """Reads `<prefix><NAME>` from the environment (or the mapping given)."""

    def __init__(
        self, environ: Mapping[str, str] | None = None, prefix: str = SECRET_ENV_PREFIX
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._prefix = prefix

    def get(self, name: str) -> str | None:
        if not _NAME.match(name):
            return None
        return self._environ.get(self._prefix + name)

    def describe(self, name: str) -> str:
        if not _NAME.match(name):
            return "secret names are letters, digits and _"
        return f"set the environment variable {self._prefix}{name}"
