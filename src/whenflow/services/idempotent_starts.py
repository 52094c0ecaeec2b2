"""Starts made safe to repeat by an `Idempotency-Key` (DESIGN.md §9).

The same (scope, key) names the same execution; the request body's SHA-256
(of its canonical JSON) tells a replay from a conflict. In one process, one
start per key runs at a time; across processes the stored key decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from whenflow.domain.errors import RequestRefused
from whenflow.storage import idempotency, queries

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


class IdempotencyConflict(RequestRefused):
    """An `Idempotency-Key` was used before with another request body."""


@dataclass(frozen=True, slots=True)
class Started:
    """What a start returns; `created` is False when an `Idempotency-Key` replayed it."""

    execution_id: str
    status: str
    created: bool


async def start_once(
    engine: AsyncEngine,
    locks: dict[tuple[str, str], asyncio.Lock],
    scope: str,
    key: str,
    request: Mapping[str, Any],
    start: Callable[[], Awaitable[Started]],
    discard: Callable[[str], Awaitable[object]] | None = None,
) -> Started:
    """`start()` unless `key` started an execution before in `scope`; then that one.

    When another process stored the key while `start()` ran, the execution
    `start()` made is passed to `discard` (to cancel it) and theirs is returned.

    Raises:
        IdempotencyConflict: the key was used with another request body.
    """
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
    lock = locks.setdefault((scope, key), asyncio.Lock())
    try:
        async with lock:  # one start per key at a time in this process
            found = await idempotency.find(engine, scope, key)
            if found is None:
                started = await start()
                entry = idempotency.IdempotentStart(started.execution_id, digest)
                if await idempotency.record(engine, scope, key, entry, time.time()):
                    return started
                if discard is not None:
                    await discard(started.execution_id)
                found = await idempotency.find(engine, scope, key)
                assert found is not None  # another process recorded it meanwhile
    finally:
        if not lock.locked() and locks.get((scope, key)) is lock:
            del locks[(scope, key)]
    if found.request_sha256 != digest:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was used with another request body "
            f"(it started execution {found.execution_id}); use a new key for a new start"
        )
    status = await queries.get_status(engine, found.execution_id)
    return Started(found.execution_id, str(status), False)
