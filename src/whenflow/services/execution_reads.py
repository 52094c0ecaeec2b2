"""The read side of `ExecutionService`: executions, events, variables, logs, explain.

`ExecutionService` inherits these; each reads the store's committed rows and
changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from whenflow.domain.states import ExecutionStatus
from whenflow.engine.runtime import ExecutionResult
from whenflow.services.notifications import NotificationView, notifications_of
from whenflow.services.pipelines import load_stored_program
from whenflow.services.views import (
    EventView,
    ExecutionRow,
    LogView,
    VariableView,
    event_view,
    iso_time,
)
from whenflow.storage import queries

if TYPE_CHECKING:
    from whenflow.engine.explain import NodeExplanation
    from whenflow.storage.artifacts import FsspecArtifactStore
    from whenflow.storage.state_store import SqlStateStore


class ExecutionReads:
    """Reads of the executions in one store (`_store`, `_artifacts` set by the subclass)."""

    _store: SqlStateStore
    _artifacts: FsspecArtifactStore

    async def notifications(self, execution_id: str) -> list[NotificationView]:
        """What became of the notifications of an execution, oldest first."""
        return await notifications_of(self._store.engine, execution_id)

    async def resolve_id(self, id_or_prefix: str) -> str:
        """The full id of the execution a unique id prefix names (as git does).

        Raises:
            ExecutionNotFound: no execution id starts with it.
            AmbiguousExecutionId: several do; the error lists them.
        """
        return await queries.resolve_execution_id(self._store.engine, id_or_prefix)

    async def status(self, execution_id: str) -> ExecutionStatus:
        """Its status alone; raises ExecutionNotFound."""
        return await queries.get_status(self._store.engine, execution_id)

    async def show(self, execution_id: str) -> ExecutionResult:
        return ExecutionResult.from_snapshot(await self._store.load_execution(execution_id))

    async def list_executions(
        self, *, limit: int = 20, status: str | None = None
    ) -> list[ExecutionRow]:
        from whenflow.domain.states import ExecutionStatus

        wanted = ExecutionStatus(status) if status else None
        rows = await queries.list_executions(self._store.engine, limit=limit, status=wanted)
        return [
            ExecutionRow(
                r.id,
                r.pipeline,
                r.version,
                str(r.status),
                iso_time(r.created_at) or "",
                iso_time(r.finished_at),
            )
            for r in rows
        ]

    async def events(
        self, execution_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[EventView]:
        """Its events with `seq > after_seq`, in order, at most `limit`; raises
        ExecutionNotFound."""
        events = await queries.get_events(self._store.engine, execution_id, after_seq, limit)
        return [event_view(e) for e in events]

    async def variables(self, execution_id: str) -> list[VariableView]:
        variables = await queries.get_variables(self._store.engine, execution_id)
        return [
            VariableView(
                v.scope, v.name, v.type, v.value, v.artifact.to_json() if v.artifact else None
            )
            for v in variables
        ]

    async def logs(self, execution_id: str, *, node_id: str | None = None) -> list[LogView]:
        lines = await queries.get_logs(self._store.engine, execution_id, node_id=node_id)
        return [
            LogView(
                line.node_id,
                line.attempt,
                None if line.item_index < 0 else line.item_index,
                line.stream,
                line.message,
                line.at,
            )
            for line in lines
        ]

    async def explain(self, execution_id: str, node_id: str) -> NodeExplanation:
        """Why `node_id` of an execution ran, was skipped or still waits (engine/explain.py).

        Raises:
            ExecutionNotFound: no such execution.
            NodeNotInPipeline: the execution's pipeline has no such node.
        """
        from whenflow.engine.explain import explain_node

        snapshot = await self._store.load_execution(execution_id)
        program = load_stored_program(snapshot.definition_text, snapshot.definition_path)
        return explain_node(program, snapshot, node_id, artifacts=self._artifacts)
