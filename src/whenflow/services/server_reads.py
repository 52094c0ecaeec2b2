"""What the API reads besides one execution: pages of executions, pending approvals."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from whenflow.domain.errors import WhenflowError
from whenflow.domain.states import ExecutionStatus
from whenflow.services.executions import ExecutionService
from whenflow.services.views import ExecutionRow, iso_time
from whenflow.storage import queries

MAX_PAGE = 500


class BadCursor(WhenflowError):
    """A `cursor` that no page of this API returned; start again without one."""


@dataclass(frozen=True, slots=True)
class Page:
    """Rows of one page and the opaque cursor of the next (None on the last page)."""

    rows: list[ExecutionRow]
    cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"items": [r.to_json() for r in self.rows], "cursor": self.cursor}


@dataclass(frozen=True, slots=True)
class PendingApproval:
    execution_id: str
    pipeline: str
    version: str
    node_id: str
    since: float | None
    message: str
    approvers: list[str]
    deadline: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "executionId": self.execution_id,
            "pipeline": self.pipeline,
            "version": self.version,
            "nodeId": self.node_id,
            "status": "pending",
            "since": iso_time(self.since),
            "message": self.message,
            "approvers": self.approvers,
            "deadline": iso_time(self.deadline),
        }


def _encode(position: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[float, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        at, last_id = data
        return float(at), str(last_id)
    except (ValueError, TypeError, binascii.Error):
        raise BadCursor(f"cursor {cursor!r} is not one this API returned") from None


async def page_executions(
    service: ExecutionService,
    *,
    limit: int = 50,
    cursor: str | None = None,
    statuses: Sequence[ExecutionStatus] = (),
    pipeline: str | None = None,
    created_from: float | None = None,
    created_to: float | None = None,
    schedule: str | None = None,
    cycle: int | None = None,
) -> Page:
    """Top-level executions, newest first; pass the returned cursor for the next page.

    Raises:
        BadCursor: `cursor` was not returned by this function.
    """
    found = await queries.page_executions(
        service.store.engine,
        limit=max(1, min(limit, MAX_PAGE)),
        after=None if cursor is None else _decode(cursor),
        statuses=statuses,
        pipeline=pipeline,
        created_from=created_from,
        created_to=created_to,
        schedule=schedule,
        cycle=cycle,
    )
    rows = [
        ExecutionRow(
            r.id,
            r.pipeline,
            r.version,
            str(r.status),
            iso_time(r.created_at) or "",
            iso_time(r.finished_at),
        )
        for r in found.rows
    ]
    return Page(rows, None if found.cursor is None else _encode(found.cursor))


async def pending_approvals(service: ExecutionService) -> list[PendingApproval]:
    """Every approval waiting for a decision, with its rendered message."""
    found = []
    for w in await queries.waiting_approvals(service.store.engine):
        deadline = w.payload.get("deadline")
        approvers = w.payload.get("approvers")
        found.append(
            PendingApproval(
                w.execution_id,
                w.pipeline,
                w.version,
                w.node_id,
                w.since,
                str(w.payload.get("message") or ""),
                [str(a) for a in approvers] if isinstance(approvers, list) else [],
                float(deadline) if isinstance(deadline, int | float) else None,
            )
        )
    return found
