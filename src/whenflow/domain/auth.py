"""Who may do what through the API (DESIGN.md §10, §11).

Roles are ordered: `viewer` reads; `operator` also starts, cancels, stops,
retries, approves and sends events; `admin` also pushes and publishes
definitions and manages tokens.
"""

from __future__ import annotations

from enum import StrEnum


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
