"""`Idempotency-Key` rows of API starts: the same (scope, key) names the same execution."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.storage import tables
from whenflow.storage.queries import Bind, connected


@dataclass(frozen=True, slots=True)
class IdempotentStart:
    """The execution a key started, and the SHA-256 of the request that started it."""

    execution_id: str
    request_sha256: str


async def find(bind: Bind, scope: str, key: str) -> IdempotentStart | None:
    t = tables.idempotency_keys
    query = sa.select(t.c.execution_id, t.c.request_sha256).where(
        t.c.scope == scope, t.c.key == key
    )
    async with connected(bind) as connection:
        row = (await connection.execute(query)).first()
    return None if row is None else IdempotentStart(row.execution_id, row.request_sha256)


async def record(
    engine: AsyncEngine, scope: str, key: str, start: IdempotentStart, now: float
) -> bool:
    """Store the key; False when another request stored it first."""
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.insert(tables.idempotency_keys).values(
                    scope=scope,
                    key=key,
                    request_sha256=start.request_sha256,
                    execution_id=start.execution_id,
                    created_at=now,
                )
            )
    except IntegrityError:
        return False
    return True
