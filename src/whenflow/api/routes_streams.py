"""Live streams as Server-Sent Events (DESIGN.md §9): an execution's events, and the
status changes of all executions.

An execution's stream replays the durable events after `since` (or the
`Last-Event-ID` header a reconnecting client sends), then follows new ones
until the execution ends, then closes. Each SSE `id` is the event's `seq`.
A comment line is sent every `KEEPALIVE_S` seconds of silence so proxies and
clients keep the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from whenflow.api.auth import require
from whenflow.api.errors import ApiError
from whenflow.api.models import ERROR_RESPONSES
from whenflow.api.routes_executions import MAX_SEQ, host_of
from whenflow.domain.auth import Role

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
KEEPALIVE_S = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, default=str))
    return ("\n".join(lines) + "\n\n").encode()


async def _with_keepalive(frames: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """`frames`, with a comment line after each KEEPALIVE_S of silence."""
    iterator = frames
    pending: asyncio.Task[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                yield b": keepalive\n\n"
                continue
            task, pending = pending, None
            try:
                frame = task.result()
            except StopAsyncIteration:
                return
            yield frame
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await frames.aclose()


@router.get(
    "/executions/{execution_id}/events/stream",
    dependencies=[Depends(require(Role.VIEWER))],
    summary="Follow an execution's events (Server-Sent Events)",
    response_class=StreamingResponse,
)
async def execution_stream(
    request: Request,
    execution_id: str,
    since: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """`event: <eventType>`, `id: <seq>`, `data: <the event as JSON>`, one per event;
    the stream ends with the execution."""
    if last_event_id is not None:
        try:
            since = int(last_event_id)
            if not 0 <= since <= MAX_SEQ:
                raise ValueError(last_event_id)
        except ValueError:
            raise ApiError(
                422,
                "invalid_request",
                "Last-Event-ID must be the seq of an event (a whole number)",
                {"path": ["header", "Last-Event-ID"]},
            ) from None
    host = host_of(request)
    await host.service.status(execution_id)  # an unknown execution is a 404, not a stream
    events = host.follow_events(execution_id, since)

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            async for event in events:
                yield _frame(event.event_type, event.to_json(), str(event.seq))
        finally:
            await events.aclose()

    return StreamingResponse(
        _with_keepalive(frames()), media_type="text/event-stream", headers=SSE_HEADERS
    )


@router.get(
    "/events/stream",
    dependencies=[Depends(require(Role.VIEWER))],
    summary="Follow the status changes of all executions (Server-Sent Events)",
    response_class=StreamingResponse,
)
async def status_stream(request: Request) -> StreamingResponse:
    """`event: status`, `data: {executionId, pipeline, version, status, at}` for every
    status change of an execution this server runs, from the moment of connecting."""
    feed = host_of(request).status_changes()  # subscribed before the response starts

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            yield b": connected\n\n"
            async for change in feed:
                yield _frame("status", change.to_json())
        finally:
            feed.close()

    return StreamingResponse(
        _with_keepalive(frames()), media_type="text/event-stream", headers=SSE_HEADERS
    )
