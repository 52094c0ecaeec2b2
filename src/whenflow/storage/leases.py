"""One owner per execution: the lease rows of `execution_owners` (DESIGN.md §7).

A process that runs executions is one `Owner` (host, pid and a random part).
It owns an execution from the commit that creates it (the owner row is
inserted in the same transaction) or from a successful `claim`, and keeps it
while its lease is renewed:

- every commit of the state store renews the leases of the executions it
  holds with one conditional UPDATE (`WHERE owner_id = me`), first in the
  transaction; if a row is no longer its own, another process took over and
  the commit is rolled back (`LeaseLost`): the fencing that keeps a stale owner
  from writing. An idle store commits that UPDATE alone every `renew_s`;
- a `claim` takes over only a row whose `expires_at` has passed, with one
  conditional UPDATE, so two processes racing for an expired lease cannot
  both win (SQLite serialises writers; PostgreSQL re-checks the condition on
  the locked row);
- the row is deleted in the commit that ends the execution, and by `release`
  when the store closes (an interrupted run can be resumed at once). A
  killed process leaves its row until it expires.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from whenflow.domain.errors import ExecutionNotFound, ExecutionOwned
from whenflow.storage import tables

# How long a lease lasts without renewal, and how often its owner renews it.
DEFAULT_LEASE_S = 15.0
_CLAIM_TRIES = 3


@dataclass(frozen=True, slots=True)
class Owner:
    """A process that runs executions."""

    owner_id: str
    host: str
    pid: int

    @classmethod
    def of_this_process(cls) -> Owner:
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}:{pid}:{secrets.token_hex(4)}", host, pid)


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    """How long a lease lasts (`lease_s`) and how often it is renewed (`renew_s`)."""

    lease_s: float = DEFAULT_LEASE_S
    renew_s: float = DEFAULT_LEASE_S / 3

    @classmethod
    def of(cls, lease_s: float) -> LeasePolicy:
        if lease_s <= 0:
            raise ValueError("a lease must last longer than 0 s")
        return cls(lease_s, lease_s / 3)


class LeaseLost(Exception):
    """A commit found executions it held owned by another process; it was rolled back."""

    def __init__(self, execution_ids: Sequence[str]) -> None:
        super().__init__(", ".join(execution_ids))
        self.execution_ids = tuple(execution_ids)


@dataclass(frozen=True, slots=True)
class OwnerRow:
    execution_id: str
    owner_id: str
    host: str
    pid: int
    acquired_at: float
    heartbeat_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class LeaseWrites:
    """What one commit does to the leases, besides its records.

    `renew`: executions held before the batch, fenced and renewed;
    `take`: executions the batch creates (owner rows inserted after them);
    `drop`: executions the batch ends (owner rows deleted).

    On PostgreSQL every commit renews first (the UPDATE locks the rows a
    takeover needs). SQLite serialises writers, so a commit that holds the
    write lock before `safe_until` (wall time; the leases it renewed last
    expire later than that by a margin) cannot have been overtaken: it renews
    only when `renew_due`, or past `safe_until`, which keeps the fence off the
    per-commit path.
    """

    owner: Owner
    now: float
    expires_at: float
    renew: tuple[str, ...]
    take: tuple[str, ...]
    drop: tuple[str, ...]
    renew_due: bool = True
    safe_until: float = float("-inf")

    def owner_rows(self) -> list[dict[str, object]]:
        o = self.owner
        return [
            {
                "execution_id": eid,
                "owner_id": o.owner_id,
                "host": o.host,
                "pid": o.pid,
                "acquired_at": self.now,
                "heartbeat_at": self.now,
                "expires_at": self.expires_at,
            }
            for eid in self.take
        ]


_t = tables.execution_owners
RENEW_SQLITE = (
    "UPDATE execution_owners SET heartbeat_at = ?, expires_at = ? "
    "WHERE execution_id = ? AND owner_id = ?"
)


def renew_rows(writes: LeaseWrites) -> list[tuple[object, ...]]:
    """Parameter rows of `RENEW_SQLITE`, one per renewed execution."""
    me = writes.owner.owner_id
    return [(writes.now, writes.expires_at, eid, me) for eid in writes.renew]


def renew_statement(writes: LeaseWrites) -> sa.Update:
    return (
        sa.update(_t)
        .where(_t.c.owner_id == writes.owner.owner_id, _t.c.execution_id.in_(writes.renew))
        .values(heartbeat_at=writes.now, expires_at=writes.expires_at)
    )


def insert_statement() -> sa.Insert:
    return sa.insert(_t)


def delete_statement(writes: LeaseWrites) -> sa.Delete:
    return sa.delete(_t).where(
        _t.c.owner_id == writes.owner.owner_id, _t.c.execution_id.in_(writes.drop)
    )


async def apply_async(connection: AsyncConnection, writes: LeaseWrites, *, first: bool) -> None:
    """The lease part of a commit on the async engine: `first` fences and renews, the
    second call (after the batch's rows) inserts and deletes owner rows."""
    if first:
        if writes.renew:
            result = await connection.execute(renew_statement(writes))
            if result.rowcount != len(writes.renew):
                raise LeaseLost(await _lost(connection, writes))
        return
    if writes.take:
        await connection.execute(insert_statement(), writes.owner_rows())
    if writes.drop:
        await connection.execute(delete_statement(writes))


async def _lost(connection: AsyncConnection, writes: LeaseWrites) -> list[str]:
    query = sa.select(_t.c.execution_id).where(
        _t.c.owner_id == writes.owner.owner_id, _t.c.execution_id.in_(writes.renew)
    )
    still = {row[0] for row in await connection.execute(query)}
    return [eid for eid in writes.renew if eid not in still]


async def claim(
    engine: AsyncEngine, execution_id: str, owner: Owner, policy: LeasePolicy, now: float
) -> None:
    """Own `execution_id` from now on: renew a lease already ours, take over an expired
    one, or take a free execution.

    Raises:
        ExecutionOwned: another process holds a lease that has not expired.
        ExecutionNotFound: no such execution.
    """
    values = {
        "owner_id": owner.owner_id,
        "host": owner.host,
        "pid": owner.pid,
        "acquired_at": now,
        "heartbeat_at": now,
        "expires_at": now + policy.lease_s,
    }
    for _ in range(_CLAIM_TRIES):
        async with engine.begin() as connection:
            mine = await connection.execute(
                sa.update(_t)
                .where(_t.c.execution_id == execution_id, _t.c.owner_id == owner.owner_id)
                .values(heartbeat_at=now, expires_at=now + policy.lease_s)
            )
            if mine.rowcount == 1:
                return
            # The takeover: conditional on expiry, atomic on both databases.
            taken = await connection.execute(
                sa.update(_t)
                .where(_t.c.execution_id == execution_id, _t.c.expires_at <= now)
                .values(**values)
            )
            if taken.rowcount == 1:
                return
        try:
            async with engine.begin() as connection:
                await connection.execute(sa.insert(_t).values(execution_id=execution_id, **values))
            return
        except IntegrityError:
            pass  # someone owns it, or there is no such execution
        row = await read_owner(engine, execution_id)
        if row is None:
            if not await _exists(engine, execution_id):
                raise ExecutionNotFound(execution_id)
            continue  # released meanwhile: try again
        if row.expires_at > now:
            raise ExecutionOwned(execution_id, row.host, row.pid, row.acquired_at, row.expires_at)
    row = await read_owner(engine, execution_id)
    if row is not None:
        raise ExecutionOwned(execution_id, row.host, row.pid, row.acquired_at, row.expires_at)
    raise ExecutionNotFound(execution_id)


async def release(engine: AsyncEngine, execution_ids: Iterable[str], owner: Owner) -> None:
    """Give up the leases of `execution_ids` this owner holds (others are untouched)."""
    ids = list(execution_ids)
    if not ids:
        return
    async with engine.begin() as connection:
        await connection.execute(
            sa.delete(_t).where(_t.c.owner_id == owner.owner_id, _t.c.execution_id.in_(ids))
        )


async def read_owner(engine: AsyncEngine, execution_id: str) -> OwnerRow | None:
    """The owner row of an execution, or None when nobody owns it."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(sa.select(_t).where(_t.c.execution_id == execution_id))
        ).first()
    if row is None:
        return None
    return OwnerRow(
        row.execution_id,
        row.owner_id,
        row.host,
        row.pid,
        row.acquired_at,
        row.heartbeat_at,
        row.expires_at,
    )


async def _exists(engine: AsyncEngine, execution_id: str) -> bool:
    t = tables.executions
    async with engine.connect() as connection:
        found = await connection.execute(sa.select(t.c.id).where(t.c.id == execution_id))
        return found.first() is not None
