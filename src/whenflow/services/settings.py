"""Settings of the execution service, read from `WHENFLOW_*` environment variables.

Each bad value is one `InvalidSetting` naming the variable and the form it
takes (the CLI prints it as one line and exits 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from whenflow.domain.durations import parse_duration
from whenflow.domain.errors import StoreSettingsError
from whenflow.engine.attempt_context import DEFAULT_TASK_LOG_LIMIT
from whenflow.storage.database import Durability, default_database_url
from whenflow.storage.leases import DEFAULT_LEASE_S
from whenflow.storage.state_store import DEFAULT_COMMIT_TIMEOUT_S

DEFAULT_API_MAX_BODY = 10 * 1024 * 1024
DEFAULT_SHUTDOWN_GRACE_S = 30.0


class InvalidSetting(StoreSettingsError):
    """A `WHENFLOW_*` setting cannot be read; the message names it and the form it takes."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Where state and artifacts live, how the store behaves, and limits; from the
    environment by default.

    `lease_s`: how long an execution's owner keeps it without renewing (renewed
    every third of it); `commit_timeout_s`: a commit that takes longer ends the
    run with a store error.
    """

    database_url: str
    artifacts_url: str | None = None
    artifacts_connection: str | None = None
    """The connection with the endpoint and credentials of an s3:// `artifacts_url`
    (`WHENFLOW_ARTIFACTS_CONNECTION`, docs/artifacts.md)."""
    lease_s: float = DEFAULT_LEASE_S
    commit_timeout_s: float = DEFAULT_COMMIT_TIMEOUT_S
    task_log_limit: int | None = DEFAULT_TASK_LOG_LIMIT
    """Bytes one attempt may log (`WHENFLOW_TASK_LOG_LIMIT`); None for no limit."""
    durability: Durability = Durability.PROCESS
    """What a commit survives (`WHENFLOW_DURABILITY`: `process` or `power`)."""
    api_max_body_bytes: int = DEFAULT_API_MAX_BODY
    """The largest API request body (`WHENFLOW_API_MAX_BODY`); larger ones get 413."""
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    """How long a stopping server lets running attempts finish (`WHENFLOW_SHUTDOWN_GRACE`)."""
    base_url: str | None = None
    """The server's public URL (`WHENFLOW_BASE_URL`): notifications link to its executions."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("WHENFLOW_DATABASE_URL") or default_database_url(),
            artifacts_url=os.environ.get("WHENFLOW_ARTIFACTS_URL") or None,
            artifacts_connection=os.environ.get("WHENFLOW_ARTIFACTS_CONNECTION") or None,
            lease_s=_seconds("WHENFLOW_OWNER_LEASE", DEFAULT_LEASE_S),
            commit_timeout_s=_seconds("WHENFLOW_COMMIT_TIMEOUT", DEFAULT_COMMIT_TIMEOUT_S),
            task_log_limit=_log_limit(os.environ.get("WHENFLOW_TASK_LOG_LIMIT")),
            durability=_durability(os.environ.get("WHENFLOW_DURABILITY")),
            api_max_body_bytes=_bytes("WHENFLOW_API_MAX_BODY", DEFAULT_API_MAX_BODY),
            shutdown_grace_s=_seconds("WHENFLOW_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE_S),
            base_url=os.environ.get("WHENFLOW_BASE_URL") or None,
        )


def _durability(text: str | None) -> Durability:
    if text is None or not text.strip():
        return Durability.PROCESS
    try:
        return Durability(text.strip().lower())
    except ValueError:
        raise InvalidSetting(
            f"WHENFLOW_DURABILITY={text!r} is not a durability level; set process (a commit "
            "survives the process dying, the default) or power (it survives a power loss too)"
        ) from None


def _seconds(variable: str, default: float) -> float:
    text = os.environ.get(variable)
    if not text:
        return default
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise InvalidSetting(
            f"{variable}={text!r} is not a duration (like 15s or 500ms): {exc}"
        ) from None
    if seconds <= 0:
        raise InvalidSetting(f"{variable}={text!r} must be longer than 0s") from None
    return seconds


def _bytes(variable: str, default: int) -> int:
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise InvalidSetting(f"{variable}={text!r} is not a number of bytes; set a whole number")
    return value


def _log_limit(text: str | None) -> int | None:
    if text is None or not text.strip():
        return DEFAULT_TASK_LOG_LIMIT
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidSetting(
            f"WHENFLOW_TASK_LOG_LIMIT={text!r} is not a number of bytes; set a whole number "
            f"such as {DEFAULT_TASK_LOG_LIMIT} (the default), or none for no limit"
        )
    return value
