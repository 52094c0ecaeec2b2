"""Status changes of the executions a server runs, for `GET /api/v1/events/stream`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from whenflow.services.views import iso_time

# A feed whose reader falls this many changes behind is closed (its stream ends).
STATUS_QUEUE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class StatusChange:
    """An execution this process runs changed its status (`at`: unix seconds)."""

    execution_id: str
    pipeline: str
    version: str
    status: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "executionId": self.execution_id,
            "pipeline": self.pipeline,
            "version": self.version,
            "status": self.status,
            "at": iso_time(self.at),
        }


class StatusFeed:
    """An async iterator of `StatusChange`s, subscribed when made (see `status_changes`)."""

    def __init__(self, feeds: set[asyncio.Queue[StatusChange | None]]) -> None:
        self._queue: asyncio.Queue[StatusChange | None] = asyncio.Queue(STATUS_QUEUE_SIZE)
        self._feeds = feeds
        feeds.add(self._queue)

    def __aiter__(self) -> StatusFeed:
        return self

    async def __anext__(self) -> StatusChange:
        if self._queue not in self._feeds and self._queue.empty():
            raise StopAsyncIteration  # the server closed, or this reader fell behind
        change = await self._queue.get()
        if change is None:
            raise StopAsyncIteration
        return change

    def close(self) -> None:
        self._feeds.discard(self._queue)
