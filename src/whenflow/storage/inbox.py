"""The inbox table: requests to a running execution from outside its process.

`whenflow approve`, `events send` and `executions cancel` (and later the API)
`post` a message in a transaction of their own; it is durable when `post`
returns. The process running the execution reads `pending` messages, and its
dispatcher marks each one applied (`InboxApplied`, through the state store) in
the same commit as the events the message caused, so a message is applied
exactly once even across a crash and `whenflow resume`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.records import InboxMessage, MessageKind
from whenflow.storage import tables
from whenflow.storage.queries import Bind, connected
from whenflow.storage.write_batch import encode_json


@dataclass(frozen=True, slots=True)
class MessageState:
    """Whether a posted message has been consumed, and if it changed anything."""

    message_id: int
    applied_at: float | None
    refusal: str | None

    @property
    def applied(self) -> bool:
        return self.applied_at is not None


async def post(
    engine: AsyncEngine,
    execution_id: str,
    kind: MessageKind,
    target: str,
    payload: Mapping[str, Any],
    now: float,
) -> int:
    """Store one message and commit; returns its id."""
    async with engine.begin() as connection:
        result = await connection.execute(
            sa.insert(tables.inbox).values(
                execution_id=execution_id,
                kind=kind.value,
                target=target,
                payload=encode_json(dict(payload)),
                created_at=now,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


async def pending(bind: Bind, execution_id: str) -> list[InboxMessage]:
    """Messages to this execution not yet applied, oldest first."""
    t = tables.inbox
    query = (
        sa.select(t.c.id, t.c.kind, t.c.target, t.c.payload, t.c.created_at)
        .where(t.c.execution_id == execution_id, t.c.applied_at.is_(None))
        .order_by(t.c.id)
    )
    async with connected(bind) as connection:
        rows = (await connection.execute(query)).all()
    return [
        InboxMessage(
            message_id=row.id,
            execution_id=execution_id,
            kind=MessageKind(row.kind),
            target=row.target,
            payload=json.loads(row.payload),
            created_at=row.created_at,
        )
        for row in rows
    ]


async def pending_many(bind: Bind, execution_ids: Sequence[str]) -> list[InboxMessage]:
    """Messages not yet applied to any of `execution_ids`, oldest first: one read for a
    whole process (the server's one inbox reader)."""
    if not execution_ids:
        return []
    t = tables.inbox
    query = (
        sa.select(t.c.id, t.c.execution_id, t.c.kind, t.c.target, t.c.payload, t.c.created_at)
        .where(t.c.execution_id.in_(list(execution_ids)), t.c.applied_at.is_(None))
        .order_by(t.c.id)
    )
    async with connected(bind) as connection:
        rows = (await connection.execute(query)).all()
    return [
        InboxMessage(
            message_id=row.id,
            execution_id=row.execution_id,
            kind=MessageKind(row.kind),
            target=row.target,
            payload=json.loads(row.payload),
            created_at=row.created_at,
        )
        for row in rows
    ]


async def state(bind: Bind, message_id: int) -> MessageState | None:
    t = tables.inbox
    query = sa.select(t.c.applied_at, t.c.refusal).where(t.c.id == message_id)
    async with connected(bind) as connection:
        row = (await connection.execute(query)).first()
    if row is None:
        return None
    return MessageState(message_id, row.applied_at, row.refusal)


async def refuse_pending(engine: AsyncEngine, execution_id: str, reason: str, now: float) -> int:
    """Mark the execution's still-pending messages refused; returns how many.

    For an execution that has ended: no process will apply them any more.
    Conditional on `applied_at IS NULL`, so a message applied meanwhile keeps
    its outcome.
    """
    t = tables.inbox
    async with engine.begin() as connection:
        result = await connection.execute(
            sa.update(t)
            .where(t.c.execution_id == execution_id, t.c.applied_at.is_(None))
            .values(applied_at=now, refusal=reason)
        )
    return int(result.rowcount or 0)
