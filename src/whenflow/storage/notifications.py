"""What became of each notification of an execution's outcome (`spec.notify`).

One row per message: `sent`, or `failed` with the last error (masked) and
how many attempts were made. Written by the notifier after its last attempt;
never part of the execution's own state, so it cannot change its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.storage import tables

_n = tables.notifications


@dataclass(frozen=True, slots=True)
class NotificationRow:
    """One notification: `outcome` (failed, completed, stopped, waiting), `channel`,
    `status` (sent, failed), `attempts`, `error` (None when sent); Unix seconds."""

    execution_id: str
    outcome: str
    channel: str
    status: str
    attempts: int
    error: str | None
    created_at: float
    finished_at: float | None


async def record(engine: AsyncEngine, row: NotificationRow) -> None:
    """Store one notification's final state (its own short transaction)."""
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(_n).values(
                execution_id=row.execution_id,
                outcome=row.outcome,
                channel=row.channel,
                status=row.status,
                attempts=row.attempts,
                error=row.error,
                created_at=row.created_at,
                finished_at=row.finished_at,
            )
        )


async def list_for(engine: AsyncEngine, execution_id: str) -> list[NotificationRow]:
    """The notifications of an execution, oldest first."""
    query = sa.select(_n).where(_n.c.execution_id == execution_id).order_by(_n.c.id)
    async with engine.connect() as connection:
        rows = await connection.execute(query)
        return [
            NotificationRow(
                r.execution_id,
                r.outcome,
                r.channel,
                r.status,
                r.attempts,
                r.error,
                r.created_at,
                r.finished_at,
            )
            for r in rows
        ]
