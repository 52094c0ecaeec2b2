"""Requests from outside the process: decisions, external events, cancels (DESIGN.md §7).

Whoever asks (`whenflow approve`, `events send`, `executions cancel`, the API)
stores a message in the execution's inbox; it is durable before they return.
The dispatcher reads the inbox (`poll_inbox`) and applies each message in a
unit of work that also records it as applied (`InboxApplied`), so the message
and what it caused commit together: after a crash a message is either applied
with its events or still pending, and `resume` applies it then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from whenflow.domain.events import EVENT_NAME, EXTERNAL_SOURCE
from whenflow.domain.records import InboxApplied, InboxMessage, MessageKind
from whenflow.engine.approvals import decide
from whenflow.engine.cleanup import cancel
from whenflow.engine.endings import stop_node

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState

# How often a running execution looks for messages: a decision or an event
# from another process takes effect within this. One indexed read per poll.
DEFAULT_POLL_INTERVAL_S = 0.25
_log = logging.getLogger("whenflow.engine")


def apply_message(state: ExecutionState, message: InboxMessage) -> None:
    """Apply one message, once; record it as applied or refused in the same unit.

    One unit per message: what a message causes (a stopWhen, a cancel) is
    settled before the next message is looked at.
    """
    if message.message_id in state.inbox_seen:
        return  # applied, its InboxApplied not committed yet
    state.inbox_seen.add(message.message_id)
    refusal = _apply(state, message)
    state.records.append(
        InboxApplied(state.execution_id, message.message_id, state.clock(), refusal)
    )


async def read_inbox(state: ExecutionState) -> None:
    """Read the execution's pending messages and apply each in a unit of its own.

    A failed read is logged and left for the next one: the messages stay
    stored, and the execution is not failed for a reader's hiccup.
    """
    try:
        messages = await state.store.pending_messages(state.execution_id)
    except Exception as exc:  # any driver error: the reader must outlive it
        _log.warning("could not read the inbox of %s: %s", state.execution_id, exc)
        return
    for message in messages:
        if message.message_id not in state.inbox_seen:
            state.run_unit(apply_message, state, message)


def refusals_at_end(state: ExecutionState, messages: Sequence[InboxMessage]) -> list[InboxApplied]:
    """Messages still pending when the execution ended: refused, so nobody waits on them."""
    reason = f"the execution ended ({state.status}) before this request was applied"
    now = state.clock()
    return [
        InboxApplied(state.execution_id, m.message_id, now, reason)
        for m in messages
        if m.message_id not in state.inbox_seen
    ]


def _apply(state: ExecutionState, message: InboxMessage) -> str | None:
    payload = dict(message.payload)
    if message.kind is MessageKind.CANCEL:  # a second cancel ends the finally nodes at once
        return cancel(state, str(payload.get("reason") or "cancelled"))
    if state.ending is not None:
        return f"the execution is already ending ({state.ending})"
    if message.kind is MessageKind.EVENT:
        if not EVENT_NAME.match(message.target):
            return f"{message.target!r} is not a valid event name"
        state.publish(f"{EXTERNAL_SOURCE}.{message.target}", EXTERNAL_SOURCE, payload)
        return None
    rt = state.nodes.get(message.target)
    if rt is None:
        return f"the pipeline has no node {message.target!r}"
    if message.kind is MessageKind.STOP:
        if rt.state.is_terminal:
            return f"node {rt.id!r} has already ended ({rt.state})"
        stop_node(state, rt, str(payload.get("reason") or "stopped by request"))
        return None
    return decide(
        state,
        rt,
        message.kind is MessageKind.APPROVE,
        str(payload.get("by") or "unknown"),
        str(payload.get("comment") or ""),
        decided_at=message.created_at,
    )


async def poll_inbox(state: ExecutionState, interval: float) -> None:
    """Read the inbox every `interval` seconds until the execution ends."""
    done = state.done
    assert done is not None
    while not done.done():
        read = asyncio.ensure_future(read_inbox(state))
        try:
            await asyncio.shield(read)
        except asyncio.CancelledError:
            # A read cancelled while its driver opens a connection leaks that
            # connection (asyncpg): let the read in flight finish, then stop.
            await asyncio.gather(read, return_exceptions=True)
            raise
        await asyncio.wait((done,), timeout=interval)
