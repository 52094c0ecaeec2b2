"""Bearer-token auth for the API routes (DESIGN.md §10, §11).

Every route but `/health` depends on `require(role)`. This is the seam the
auth work fills in: today it admits every request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from whenflow.domain.auth import Role


def require(role: Role) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency admitting requests whose token holds `role` or higher."""

    async def dependency(request: Request) -> None:
        return None

    dependency.__name__ = f"require_{role.value}"
    return dependency
