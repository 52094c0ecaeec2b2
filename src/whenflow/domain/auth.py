"""Who may do what through the API (DESIGN.md §10, §11).

Roles are ordered: `viewer` reads; `operator` also starts, cancels, stops,
retries, approves and sends events; `admin` also pushes and publishes
definitions and manages tokens.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from enum import StrEnum

from whenflow.domain.errors import WhenflowError


class Role(StrEnum):
    """A token's role; a higher role may do everything a lower one may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether a holder of this role may call a route that needs `needed`."""
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


TOKEN_PREFIX = "wf_"
"""Every token whenflow issues starts with this, so a leaked one is easy to search for."""


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A stored token, as listed: never the token itself, only what it is for.

    Times are Unix seconds; `last_used_at` is updated at most once a minute
    (`TokenService.authenticate`), `revoked_at` is set once and then kept.
    """

    token_id: str
    name: str
    role: Role
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_json(self) -> dict[str, object]:
        """camelCase, times as ISO 8601 UTC (null when never)."""
        return {
            "id": self.token_id,
            "name": self.name,
            "role": self.role.value,
            "createdAt": _iso(self.created_at),
            "lastUsedAt": _iso(self.last_used_at),
            "revokedAt": _iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just created: `token` is the only time its text exists outside its owner."""

    token: str
    stored: ApiToken


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


class TokenNotFound(WhenflowError):
    """No token has that id (or unique id prefix); `whenflow tokens list` shows them."""


class UnknownRole(WhenflowError):
    """A role name that is not viewer, operator or admin."""


def parse_role(text: str) -> Role:
    """The role named `text` (any case); raises UnknownRole naming the three."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise UnknownRole(f"unknown role {text!r}: use viewer, operator or admin") from None
