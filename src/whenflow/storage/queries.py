"""The read side: executions, events, variables, nodes and logs, as domain values.

Services (and through them the CLI and API) call these. The caller owns the
transaction: pass an open `AsyncConnection` to read several things in one
snapshot, or an `AsyncEngine` to let a function borrow a connection for the
one read. Nothing here writes or commits.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from whenflow.domain.errors import AmbiguousExecutionId, ExecutionNotFound
from whenflow.domain.events import Event
from whenflow.domain.records import AttemptRecorded, ExecutionSnapshot, NodeUpdated
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.domain.variables import ArtifactRef, Variable
from whenflow.storage import tables

Bind = AsyncConnection | AsyncEngine


@dataclass(frozen=True, slots=True)
class ExecutionSummary:
    """One line of `whenflow executions list`."""

    id: str
    pipeline: str
    version: str
    status: ExecutionStatus
    created_at: float
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a task wrote; `id` grows with time, so `after_id` tails the log."""

    id: int
    execution_id: str
    node_id: str
    attempt: int
    item_index: int
    stream: str
    message: str
    at: float


@asynccontextmanager
async def connected(bind: Bind) -> AsyncIterator[AsyncConnection]:
    """Use the caller's connection as is, or borrow one from the engine for one read."""
    if isinstance(bind, AsyncConnection):
        yield bind
    else:
        async with bind.connect() as connection:
            yield connection


async def _require_execution(connection: AsyncConnection, execution_id: str) -> None:
    ex = tables.executions
    found = await connection.scalar(sa.select(ex.c.id).where(ex.c.id == execution_id))
    if found is None:
        raise ExecutionNotFound(execution_id)


async def list_executions(
    bind: Bind,
    limit: int = 50,
    status: ExecutionStatus | str | None = None,
    pipeline: str | None = None,
) -> list[ExecutionSummary]:
    """The newest executions first, optionally of one status or pipeline."""
    ex = tables.executions
    query = sa.select(
        ex.c.id,
        ex.c.pipeline_name,
        ex.c.pipeline_version,
        ex.c.status,
        ex.c.created_at,
        ex.c.finished_at,
    )
    if status is not None:
        query = query.where(ex.c.status == ExecutionStatus(status).value)
    if pipeline is not None:
        query = query.where(ex.c.pipeline_name == pipeline)
    query = query.order_by(ex.c.created_at.desc(), ex.c.id).limit(limit)
    async with connected(bind) as connection:
        rows = (await connection.execute(query)).all()
    return [
        ExecutionSummary(
            id=r.id,
            pipeline=r.pipeline_name,
            version=r.pipeline_version,
            status=ExecutionStatus(r.status),
            created_at=r.created_at,
            finished_at=r.finished_at,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    """One page of executions, newest first; `cursor` continues after its last row."""

    rows: list[ExecutionSummary]
    cursor: tuple[float, str] | None


async def page_executions(
    bind: Bind,
    *,
    limit: int,
    after: tuple[float, str] | None = None,
    statuses: Sequence[ExecutionStatus] = (),
    pipeline: str | None = None,
    created_from: float | None = None,
    created_to: float | None = None,
    schedule: str | None = None,
    cycle: int | None = None,
) -> ExecutionPage:
    """Top-level executions, newest first, filtered; `after` is a previous page's cursor
    (`created_at`, `id` of its last row). Sub-pipeline executions are left out.
    `schedule` (a schedule key) keeps the executions it fired, `cycle` those of that
    cycle number (of any schedule unless `schedule` is given)."""
    ex = tables.executions
    query = sa.select(
        ex.c.id,
        ex.c.pipeline_name,
        ex.c.pipeline_version,
        ex.c.status,
        ex.c.created_at,
        ex.c.finished_at,
    ).where(ex.c.parent_execution_id.is_(None))
    if statuses:
        query = query.where(ex.c.status.in_([s.value for s in statuses]))
    if pipeline is not None:
        query = query.where(ex.c.pipeline_name == pipeline)
    if created_from is not None:
        query = query.where(ex.c.created_at >= created_from)
    if created_to is not None:
        query = query.where(ex.c.created_at < created_to)
    if schedule is not None or cycle is not None:
        fires = tables.schedule_fires
        fired = sa.select(fires.c.execution_id).where(fires.c.execution_id.is_not(None))
        if schedule is not None:
            fired = fired.where(fires.c.schedule_id == schedule)
        if cycle is not None:
            fired = fired.where(fires.c.cycle == cycle)
        query = query.where(ex.c.id.in_(fired))
    if after is not None:
        at, last_id = after
        query = query.where(
            sa.or_(ex.c.created_at < at, sa.and_(ex.c.created_at == at, ex.c.id > last_id))
        )
    query = query.order_by(ex.c.created_at.desc(), ex.c.id).limit(limit + 1)
    async with connected(bind) as connection:
        rows = (await connection.execute(query)).all()
    found = [
        ExecutionSummary(
            id=r.id,
            pipeline=r.pipeline_name,
            version=r.pipeline_version,
            status=ExecutionStatus(r.status),
            created_at=r.created_at,
            finished_at=r.finished_at,
        )
        for r in rows[:limit]
    ]
    cursor = (found[-1].created_at, found[-1].id) if len(rows) > limit else None
    return ExecutionPage(found, cursor)


async def unfinished_roots(bind: Bind) -> list[str]:
    """Top-level executions that have not ended, oldest first (what a server resumes)."""
    ex = tables.executions
    terminal = [s.value for s in ExecutionStatus if s.is_terminal]
    query = (
        sa.select(ex.c.id)
        .where(ex.c.parent_execution_id.is_(None), ex.c.status.not_in(terminal))
        .order_by(ex.c.created_at, ex.c.id)
    )
    async with connected(bind) as connection:
        return [str(r.id) for r in await connection.execute(query)]


@dataclass(frozen=True, slots=True)
class WaitingApproval:
    """An approval node waiting for a decision, with what its `.waiting` event said."""

    execution_id: str
    pipeline: str
    version: str
    node_id: str
    since: float | None
    payload: dict[str, object]


async def waiting_approvals(bind: Bind, limit: int = 1000) -> list[WaitingApproval]:
    """Approval nodes waiting for a decision in unfinished executions, oldest first."""
    ex, ns, ev = tables.executions, tables.node_states, tables.events
    terminal = [s.value for s in ExecutionStatus if s.is_terminal]
    query = (
        sa.select(
            ns.c.execution_id,
            ex.c.pipeline_name,
            ex.c.pipeline_version,
            ns.c.node_id,
            ns.c.started_at,
            ev.c.payload,
            ev.c.seq,
        )
        .join(ex, ex.c.id == ns.c.execution_id)
        .join(
            ev,
            sa.and_(
                ev.c.execution_id == ns.c.execution_id,
                ev.c.event_type == ns.c.node_id + ".waiting",
            ),
        )
        .where(ns.c.state == NodeState.WAITING.value, ex.c.status.not_in(terminal))
        .order_by(ns.c.started_at, ns.c.execution_id, ns.c.node_id, ev.c.seq)
        .limit(limit)
    )
    latest: dict[tuple[str, str], WaitingApproval] = {}
    async with connected(bind) as connection:
        for r in await connection.execute(query):
            latest[(r.execution_id, r.node_id)] = WaitingApproval(
                r.execution_id,
                r.pipeline_name,
                r.pipeline_version,
                r.node_id,
                r.started_at,
                json.loads(r.payload),
            )
    return list(latest.values())


# How many candidates an ambiguous prefix lists.
MAX_CANDIDATES = 10


async def resolve_execution_id(bind: Bind, id_or_prefix: str) -> str:
    """The full id of the one execution whose id is, or starts with, `id_or_prefix`.

    As git does with commit ids: any unique prefix names an execution.
    Raises ExecutionNotFound (none) or AmbiguousExecutionId (several).
    """
    ex = tables.executions
    prefix = id_or_prefix.strip()
    if not prefix:
        raise ExecutionNotFound(id_or_prefix)
    async with connected(bind) as connection:
        exact = await connection.scalar(sa.select(ex.c.id).where(ex.c.id == prefix))
        if exact is not None:
            return str(exact)
        query = (
            sa.select(ex.c.id)
            .where(ex.c.id.startswith(prefix, autoescape=True))
            .order_by(ex.c.id)
            .limit(MAX_CANDIDATES + 1)
        )
        found = [str(r.id) for r in await connection.execute(query)]
    # SQLite's LIKE ignores case; an id prefix does not.
    found = [i for i in found if i.startswith(prefix)]
    if not found:
        raise ExecutionNotFound(id_or_prefix)
    if len(found) > 1:
        raise AmbiguousExecutionId(prefix, found[:MAX_CANDIDATES], len(found) > MAX_CANDIDATES)
    return found[0]


async def get_status(bind: Bind, execution_id: str) -> ExecutionStatus:
    """The status of one execution, without its history; raises ExecutionNotFound."""
    ex = tables.executions
    async with connected(bind) as connection:
        found = await connection.scalar(sa.select(ex.c.status).where(ex.c.id == execution_id))
    if found is None:
        raise ExecutionNotFound(execution_id)
    return ExecutionStatus(found)


async def get_child_ids(bind: Bind, execution_id: str) -> list[str]:
    """The ids of the executions `execution_id` started as sub-pipelines (one level)."""
    ex = tables.executions
    query = sa.select(ex.c.id).where(ex.c.parent_execution_id == execution_id).order_by(ex.c.id)
    async with connected(bind) as connection:
        return [str(r.id) for r in await connection.execute(query)]


async def get_parent_id(bind: Bind, execution_id: str) -> str | None:
    """The execution whose `pipeline` task started this one, or None for a top-level one."""
    ex = tables.executions
    query = sa.select(ex.c.parent_execution_id).where(ex.c.id == execution_id)
    async with connected(bind) as connection:
        found = await connection.scalar(query)
    return None if found is None else str(found)


async def get_definition(bind: Bind, execution_id: str) -> tuple[str, str | None]:
    """The definition text an execution runs and the file it came from; raises ExecutionNotFound."""
    ex = tables.executions
    query = sa.select(ex.c.definition_text, ex.c.definition_path).where(ex.c.id == execution_id)
    async with connected(bind) as connection:
        row = (await connection.execute(query)).first()
    if row is None:
        raise ExecutionNotFound(execution_id)
    return str(row.definition_text), row.definition_path


async def get_execution(bind: Bind, execution_id: str) -> ExecutionSnapshot:
    """Everything durable about one execution; raises ExecutionNotFound."""
    ex = tables.executions
    async with connected(bind) as connection:
        row = (await connection.execute(sa.select(ex).where(ex.c.id == execution_id))).first()
        if row is None:
            raise ExecutionNotFound(execution_id)
        events = await _select_events(connection, execution_id, 0, None)
        variables = await _select_variables(connection, execution_id)
        nodes = await _select_nodes(connection, execution_id)
        attempts = await _select_attempts(connection, execution_id)
    return ExecutionSnapshot(
        execution_id=row.id,
        pipeline_name=row.pipeline_name,
        pipeline_version=row.pipeline_version,
        definition_text=row.definition_text,
        definition_path=row.definition_path,
        inputs=json.loads(row.inputs),
        status=ExecutionStatus(row.status),
        created_at=row.created_at,
        finished_at=row.finished_at,
        outputs=None if row.outputs is None else json.loads(row.outputs),
        error=row.error,
        events=tuple(events),
        variables=tuple(variables),
        nodes=tuple(nodes),
        attempts=tuple(attempts),
        retry_of=row.retry_of,
    )


async def get_events(
    bind: Bind, execution_id: str, after_seq: int = 0, limit: int | None = None
) -> list[Event]:
    """Events with `seq > after_seq`, in seq order; raises ExecutionNotFound."""
    async with connected(bind) as connection:
        found = await _select_events(connection, execution_id, after_seq, limit)
        if not found:
            await _require_execution(connection, execution_id)
    return found


async def get_variables(bind: Bind, execution_id: str) -> list[Variable]:
    """The latest value of every variable, by scope and name; raises ExecutionNotFound."""
    async with connected(bind) as connection:
        found = await _select_variables(connection, execution_id)
        if not found:
            await _require_execution(connection, execution_id)
    return found


async def get_nodes(bind: Bind, execution_id: str) -> list[NodeUpdated]:
    """The latest state of every node that has one, by node id; raises ExecutionNotFound."""
    async with connected(bind) as connection:
        found = await _select_nodes(connection, execution_id)
        if not found:
            await _require_execution(connection, execution_id)
    return found


async def get_attempts(bind: Bind, execution_id: str) -> list[AttemptRecorded]:
    """Every recorded attempt, by node, item and attempt number; raises ExecutionNotFound."""
    async with connected(bind) as connection:
        found = await _select_attempts(connection, execution_id)
        if not found:
            await _require_execution(connection, execution_id)
    return found


async def get_logs(
    bind: Bind,
    execution_id: str,
    node_id: str | None = None,
    after_id: int = 0,
    limit: int | None = None,
) -> list[LogLine]:
    """Task log lines in the order written, optionally of one node; raises ExecutionNotFound."""
    logs = tables.task_logs
    query = sa.select(logs).where(logs.c.execution_id == execution_id, logs.c.id > after_id)
    if node_id is not None:
        query = query.where(logs.c.node_id == node_id)
    query = query.order_by(logs.c.id).limit(limit)
    async with connected(bind) as connection:
        rows = (await connection.execute(query)).all()
        if not rows:
            await _require_execution(connection, execution_id)
    return [
        LogLine(
            id=r.id,
            execution_id=r.execution_id,
            node_id=r.node_id,
            attempt=r.attempt,
            item_index=r.item_index,
            stream=r.stream,
            message=r.message,
            at=r.at,
        )
        for r in rows
    ]


async def _select_events(
    connection: AsyncConnection, execution_id: str, after_seq: int, limit: int | None
) -> list[Event]:
    ev = tables.events
    query = (
        sa.select(ev)
        .where(ev.c.execution_id == execution_id, ev.c.seq > after_seq)
        .order_by(ev.c.seq)
        .limit(limit)
    )
    return [
        Event(
            event_id=r.event_id,
            execution_id=r.execution_id,
            seq=r.seq,
            event_type=r.event_type,
            source=r.source,
            timestamp=r.timestamp,
            payload=json.loads(r.payload),
        )
        for r in await connection.execute(query)
    ]


async def _select_variables(connection: AsyncConnection, execution_id: str) -> list[Variable]:
    va = tables.variables
    query = sa.select(va).where(va.c.execution_id == execution_id).order_by(va.c.scope, va.c.name)
    return [
        Variable(
            scope=r.scope,
            name=r.name,
            value=json.loads(r.value),
            type=r.type,
            created_at=r.created_at,
            metadata=json.loads(r.metadata),
            artifact=None if r.artifact is None else ArtifactRef.from_json(json.loads(r.artifact)),
        )
        for r in await connection.execute(query)
    ]


async def _select_nodes(connection: AsyncConnection, execution_id: str) -> list[NodeUpdated]:
    ns = tables.node_states
    query = sa.select(ns).where(ns.c.execution_id == execution_id).order_by(ns.c.node_id)
    return [
        NodeUpdated(
            execution_id=r.execution_id,
            node_id=r.node_id,
            state=NodeState(r.state),
            attempts=r.attempts,
            updated_at=r.updated_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
            error=r.error,
            reason=r.reason,
        )
        for r in await connection.execute(query)
    ]


async def _select_attempts(connection: AsyncConnection, execution_id: str) -> list[AttemptRecorded]:
    at = tables.node_attempts
    query = (
        sa.select(at)
        .where(at.c.execution_id == execution_id)
        .order_by(at.c.node_id, at.c.item_index, at.c.attempt)
    )
    return [
        AttemptRecorded(
            execution_id=r.execution_id,
            node_id=r.node_id,
            item_index=r.item_index,
            attempt=r.attempt,
            status=NodeState(r.status),
            idempotency_key=r.idempotency_key,
            started_at=r.started_at,
            finished_at=r.finished_at,
            error_type=r.error_type,
            error_message=r.error_message,
        )
        for r in await connection.execute(query)
    ]
