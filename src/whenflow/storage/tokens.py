"""The `api_tokens` table: API tokens by the SHA-256 of their text, never the text.

The caller owns the transaction: every function takes an open `AsyncConnection`
(`services/tokens.py` decides what commits together).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from whenflow.domain.auth import ApiToken, Role
from whenflow.storage import tables

_T = tables.api_tokens
_COLUMNS = (
    _T.c.id,
    _T.c.name,
    _T.c.role,
    _T.c.created_at,
    _T.c.last_used_at,
    _T.c.revoked_at,
)


def _row(m: sa.RowMapping) -> ApiToken:
    return ApiToken(
        token_id=m["id"],
        name=m["name"],
        role=Role(m["role"]),
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        revoked_at=m["revoked_at"],
    )


async def insert(conn: AsyncConnection, token: ApiToken, token_hash: str) -> None:
    """Store a new token; `token_hash` is the SHA-256 hex digest of its text."""
    await conn.execute(
        sa.insert(_T).values(
            id=token.token_id,
            name=token.name,
            role=token.role.value,
            token_hash=token_hash,
            created_at=token.created_at,
            last_used_at=None,
            revoked_at=None,
        )
    )


async def find_by_hash(conn: AsyncConnection, token_hash: str) -> tuple[ApiToken, str] | None:
    """The token whose text hashes to `token_hash`, with the stored hash; revoked ones too."""
    row = (
        await conn.execute(
            sa.select(*_COLUMNS, _T.c.token_hash).where(_T.c.token_hash == token_hash)
        )
    ).first()
    if row is None:
        return None
    return _row(row._mapping), row._mapping["token_hash"]


async def all_tokens(conn: AsyncConnection) -> list[ApiToken]:
    """Every token, revoked ones included, oldest first."""
    rows = await conn.execute(sa.select(*_COLUMNS).order_by(_T.c.created_at, _T.c.id))
    return [_row(r._mapping) for r in rows]


async def any_active(conn: AsyncConnection) -> bool:
    """Whether at least one token is not revoked (one indexed read, at most one row)."""
    query = sa.select(_T.c.id).where(_T.c.revoked_at.is_(None)).limit(1)
    return (await conn.execute(query)).first() is not None


async def revoke(conn: AsyncConnection, token_id: str, now: float) -> bool:
    """Mark a token revoked at `now`; False if no such token or it was revoked already."""
    result = await conn.execute(
        sa.update(_T).where(_T.c.id == token_id, _T.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return result.rowcount == 1


async def touch(conn: AsyncConnection, token_id: str, now: float) -> None:
    """Record that the token was used at `now`."""
    await conn.execute(sa.update(_T).where(_T.c.id == token_id).values(last_used_at=now))
