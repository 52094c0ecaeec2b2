"""Run, resume and inspect executions against the durable store (DESIGN.md §7, §9)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from whenflow.domain.definitions import PipelineDefinition
from whenflow.domain.errors import RequestRefused, StoreError, WhenflowError
from whenflow.domain.events import EVENT_NAME, Event
from whenflow.domain.param_types import resolve_inputs
from whenflow.domain.records import LogAppended, MessageKind
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.domain.variables import ArtifactRef, Variable
from whenflow.dsl.listeners import external_names, listens_for
from whenflow.dsl.program import PipelineProgram
from whenflow.engine.attempt_context import DEFAULT_TASK_LOG_LIMIT
from whenflow.engine.orchestrator import Orchestrator
from whenflow.engine.ports import TaskRunner
from whenflow.engine.runtime import ExecutionResult
from whenflow.engine.variable_pool import ARTIFACT_MARKER
from whenflow.services.notifications import (
    NotificationView,
    Notifier,
    listener,
    notifications_of,
)
from whenflow.services.pipelines import default_runner, load_stored_program
from whenflow.services.settings import Settings
from whenflow.services.views import EventView, ExecutionRow, LogView, VariableView, iso_time
from whenflow.storage import inbox, queries
from whenflow.storage.artifacts import FsspecArtifactStore
from whenflow.storage.connections import EnvironmentConnections
from whenflow.storage.database import make_engine, upgrade
from whenflow.storage.inbox import MessageState
from whenflow.storage.leases import LeasePolicy

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from whenflow.engine.explain import NodeExplanation
from whenflow.storage.secrets import EnvSecretStore
from whenflow.storage.state_store import SqlStateStore

EventListener = Callable[[Event], None]
NOTIFY_DRAIN_S = 60.0
"""How long closing the service waits for notifications still being sent."""
LogListener = Callable[[LogAppended], None]
_log = logging.getLogger(__name__)


class ExecutionService:
    """The use cases of executions; open it with `async with ExecutionService.open()`."""

    def __init__(
        self,
        store: SqlStateStore,
        artifacts: FsspecArtifactStore,
        runner: TaskRunner,
        settings: Settings | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """`notifier` sends the notifications of `spec.notify` (default: none are sent)."""
        self._store = store
        self._artifacts = artifacts
        self._runner = runner
        self._secrets = EnvSecretStore()
        self._log_limit = DEFAULT_TASK_LOG_LIMIT if settings is None else settings.task_log_limit
        self.notifier = notifier

    @property
    def store(self) -> SqlStateStore:
        return self._store

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings | None = None, runner: TaskRunner | None = None
    ) -> AsyncIterator[ExecutionService]:
        """The service over the store `settings` name.

        `runner` runs the tasks of every execution this service starts *and*
        resumes (default: the built-in executors), so an execution of a custom
        task type can be resumed by whoever could run it.
        """
        settings = settings or Settings.from_env()
        artifacts = FsspecArtifactStore(settings.artifacts_url)  # a bad URL fails first
        engine = make_engine(settings.database_url, durability=settings.durability)
        own_runner = default_runner() if runner is None else None
        task_runner: TaskRunner = runner or own_runner or default_runner()
        store = SqlStateStore(
            engine,
            commit_timeout_s=settings.commit_timeout_s,
            lease=LeasePolicy.of(settings.lease_s),
            durability=settings.durability,
        )
        notifier = Notifier(
            engine,
            secrets=EnvSecretStore(),
            connections=EnvironmentConnections(),
            base_url=settings.base_url,
        )
        try:
            await upgrade(engine)
            async with store:
                try:
                    yield cls(store, artifacts, task_runner, settings, notifier)
                finally:
                    await notifier.drain(NOTIFY_DRAIN_S)
        finally:
            await engine.dispose()
            if own_runner is not None:
                own_runner.close()

    async def run(
        self,
        program: PipelineProgram,
        inputs: Mapping[str, Any],
        *,
        on_event: EventListener | None = None,
        execution_id: str | None = None,
        on_log: LogListener | None = None,
    ) -> ExecutionResult:
        """Start an execution and wait for its end; raises InputError for bad inputs.

        `on_event` sees every event, `on_log` every task log line as stored
        (masked, within the per-attempt cap).
        """
        resolved = resolve_inputs(program.definition.inputs, inputs)
        orchestrator = Orchestrator(
            program,
            store=self._store,
            runner=self._runner,
            artifacts=self._artifacts,
            secrets=self._secrets,
            inputs=resolved,
            execution_id=execution_id,
            on_event=self._listener(program, on_event),
            on_log=on_log,
            task_log_limit=self._log_limit,
        )
        result = await self._collect_garbage(await _halting(orchestrator, orchestrator.run()))
        return self._notified(program, result)

    def _listener(
        self, program: PipelineProgram, on_event: EventListener | None
    ) -> EventListener | None:
        return on_event if self.notifier is None else listener(self.notifier, program, on_event)

    def _notified(self, program: PipelineProgram, result: ExecutionResult) -> ExecutionResult:
        if self.notifier is not None:
            self.notifier.on_result(program.definition, result)
        return result

    async def notifications(self, execution_id: str) -> list[NotificationView]:
        """What became of the notifications of an execution, oldest first."""
        return await notifications_of(self._store.engine, execution_id)

    async def resume(
        self,
        execution_id: str,
        *,
        on_event: EventListener | None = None,
        on_log: LogListener | None = None,
    ) -> ExecutionResult:
        """Continue an unfinished execution; a finished one is returned as it is.

        The execution is claimed first (DESIGN.md §7, one owner), then read, so
        nothing its previous owner committed is missed.

        Raises:
            ExecutionOwned: another live process runs it (its lease has not expired).
            ExecutionNotFound: no such execution.
        """
        snapshot = await self._store.load_execution(execution_id)
        if snapshot.status.is_terminal:
            await _refuse_leftovers(self._store.engine, execution_id, snapshot.status)
            return ExecutionResult.from_snapshot(snapshot)
        await self._store.claim(execution_id)
        snapshot = await self._store.load_execution(execution_id)
        if snapshot.status.is_terminal:
            # Its owner ended it (and gave up its lease) between the read above and the
            # claim: nothing to resume, and a finished execution is never reopened. The
            # lease just taken is released when the store closes.
            return ExecutionResult.from_snapshot(snapshot)
        program = load_stored_program(
            snapshot.definition_text, snapshot.definition_path, runner=self._runner
        )
        orchestrator = Orchestrator(
            program,
            store=self._store,
            runner=self._runner,
            artifacts=self._artifacts,
            secrets=self._secrets,
            inputs=snapshot.inputs,
            execution_id=execution_id,
            on_event=self._listener(program, on_event),
            on_log=on_log,
            task_log_limit=self._log_limit,
        )
        result = await self._collect_garbage(
            await _halting(orchestrator, orchestrator.resume(snapshot))
        )
        return self._notified(program, result)

    async def _collect_garbage(self, result: ExecutionResult) -> ExecutionResult:
        """Delete the artifacts an ended execution wrote but does not reference.

        They belong to attempts that failed, timed out or were lost; the
        completed attempts' artifacts are what the variables reference. A
        failure here is logged, never the execution's outcome.
        """
        execution_id = result.execution_id
        if not result.status.is_terminal:
            return result
        engine = self._store.engine
        try:
            # The execution and its sub-pipelines' executions: a parent's outputs may
            # reference a child's artifacts, so the references of all of them are kept.
            family, level = [execution_id], [execution_id]
            while level:
                level = [c for parent in level for c in await queries.get_child_ids(engine, parent)]
                family.extend(level)
            stored = [
                member
                for member in family
                if await asyncio.to_thread(self._artifacts.has_artifacts, member)
                and (
                    member == execution_id or (await queries.get_status(engine, member)).is_terminal
                )
            ]
            if not stored:
                return result
            keep: list[ArtifactRef] = []
            for member in family:
                keep.extend(referenced_artifacts(await queries.get_variables(engine, member)))
            for member in stored:
                await asyncio.to_thread(self._artifacts.collect_garbage, member, keep)
        except (OSError, WhenflowError):
            _log.warning("could not delete the unused artifacts of %s", execution_id, exc_info=True)
        return result

    async def send(
        self,
        execution_id: str,
        kind: MessageKind,
        target: str = "",
        payload: Mapping[str, Any] | None = None,
        *,
        wait_s: float = 0.0,
        force: bool = False,
    ) -> MessageState:
        """Post a decision, an external event or a cancel to an unfinished execution.

        The message is durable when this returns, and the process running the
        execution applies it at its next inbox read (or `resume` does). What
        can be checked here is checked first: the execution has not ended, a
        decided node is waiting, an event name is valid. The process checks
        again when it applies the message (the node may have timed out
        meanwhile) and records a refusal. Waits up to `wait_s` seconds for
        that outcome. An event that no trigger or template of the execution's
        pipeline matches is refused unless `force` (it would change nothing).

        Raises:
            ExecutionNotFound: no such execution.
            RequestRefused: the message cannot apply; the error says why.
        """
        engine = self._store.engine
        status = await queries.get_status(engine, execution_id)
        if status.is_terminal:
            raise RequestRefused(
                f"execution {execution_id} has ended ({status}); nothing to change"
            )
        if kind is MessageKind.APPROVE or kind is MessageKind.REJECT:
            rows = {n.node_id: n for n in await queries.get_nodes(engine, execution_id)}
            row = rows.get(target)
            await _check_decision_target(engine, execution_id, target)
            if row is None or row.state is not NodeState.WAITING:
                now = "has not started" if row is None else f"is {row.state}"
                raise RequestRefused(
                    f"node {target!r} of execution {execution_id} {now}, not waiting for a decision"
                )
        if kind is MessageKind.EVENT and not EVENT_NAME.match(target):
            raise RequestRefused(
                f"{target!r} is not an event name: use lowercase letters, digits and _"
            )
        if kind is MessageKind.EVENT and not force:
            await self._refuse_unheard(execution_id, target)
        try:
            message_id = await inbox.post(
                engine, execution_id, kind, target, payload or {}, time.time()
            )
        except SQLAlchemyError as exc:  # a locked or full database: nothing was sent
            raise StoreError(
                f"could not store the request to execution {execution_id} "
                f"({_database_reason(exc)}); nothing was sent: try again"
            ) from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            state = await inbox.state(engine, message_id)
            assert state is not None
            if state.applied:
                return state
            status = await queries.get_status(engine, execution_id)
            if status.is_terminal:  # it ended between the check above and the post
                await _refuse_leftovers(engine, execution_id, status)
                continue
            left = deadline - loop.time()
            if left <= 0:
                return state
            await asyncio.sleep(min(0.05, left))  # the running process applies it meanwhile

    async def _refuse_unheard(self, execution_id: str, name: str) -> None:
        """Refuse `external.<name>` when the execution's pipeline never reads it."""
        snapshot = await queries.get_execution(self._store.engine, execution_id)
        try:
            program = load_stored_program(snapshot.definition_text, snapshot.definition_path)
        except WhenflowError:
            return  # the pipeline cannot be compiled here: nothing to check against
        if listens_for(program, name):
            return
        names = external_names(program)
        listened = f"it listens for {', '.join(names)}" if names else "it waits for no event"
        raise RequestRefused(
            f"no trigger of execution {execution_id} waits for external.{name} ({listened}); "
            "check the name, or pass --force to publish it anyway"
        )

    async def resolve_id(self, id_or_prefix: str) -> str:
        """The full id of the execution a unique id prefix names (as git does).

        Raises:
            ExecutionNotFound: no execution id starts with it.
            AmbiguousExecutionId: several do; the error lists them.
        """
        return await queries.resolve_execution_id(self._store.engine, id_or_prefix)

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

    async def events(self, execution_id: str) -> list[EventView]:
        events = await queries.get_events(self._store.engine, execution_id)
        return [
            EventView(e.seq, e.event_type, e.source, e.timestamp, e.payload, e.event_id)
            for e in events
        ]

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


def referenced_artifacts(variables: Iterable[Variable]) -> Iterator[ArtifactRef]:
    """Every artifact reference the variables hold (forEach items nest theirs in values)."""
    for variable in variables:
        if variable.artifact is not None:
            yield variable.artifact
        yield from _nested_refs(variable.value)


def _nested_refs(value: Any) -> Iterator[ArtifactRef]:
    if isinstance(value, dict):
        marked = value.get(ARTIFACT_MARKER) if len(value) == 1 else None
        if isinstance(marked, dict):
            ref = _as_ref(marked)
            if ref is not None:
                yield ref
            return
        for item in value.values():
            yield from _nested_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _nested_refs(item)


def _as_ref(data: Mapping[str, Any]) -> ArtifactRef | None:
    try:
        return ArtifactRef.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None  # task data shaped like a marker, not a reference


async def _check_decision_target(engine: AsyncEngine, execution_id: str, target: str) -> None:
    """Refuse a decision for a node that is not an approval node of the pipeline.

    The refusal names the pipeline's approval nodes, so a typo is easy to fix.
    """
    from whenflow.dsl.approval import APPROVAL_TASK_TYPE

    text, path = await queries.get_definition(engine, execution_id)
    definition = await asyncio.to_thread(_stored_definition, text, path)
    if definition is None:
        return  # the stored text no longer parses here; the generic refusal follows
    approvals = [n.id for n in definition.nodes if n.task.type == APPROVAL_TASK_TYPE]
    if target in approvals:
        return
    listed = ", ".join(approvals) if approvals else "none"
    problem = "is not an approval node" if target in definition.node_ids else "does not exist"
    raise RequestRefused(
        f"node {target!r} {problem} in pipeline {definition.name}; its approval nodes: {listed}"
    )


async def _halting(
    orchestrator: Orchestrator, work: Coroutine[Any, Any, ExecutionResult]
) -> ExecutionResult:
    """Await `work`; if the caller is cancelled (Ctrl-C, SIGTERM), stop the execution's
    attempts (their processes) before the store closes and releases the lease."""
    try:
        return await work
    except asyncio.CancelledError:
        await orchestrator.halt()
        raise


def _database_reason(exc: SQLAlchemyError) -> str:
    """The driver's own words (`database is locked`), without SQLAlchemy's SQL and links."""
    cause = getattr(exc, "orig", None) or exc
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def _stored_definition(text: str, path: str | None) -> PipelineDefinition | None:
    """An execution's definition parsed again (Task files beside it resolved), or None."""
    from whenflow.domain.errors import DefinitionError
    from whenflow.dsl.parse import parse_pipeline_text

    base_dir = Path(path).resolve().parent if path else None
    try:
        return parse_pipeline_text(text, path or "<stored>", base_dir=base_dir).definition
    except DefinitionError:
        return None


async def _refuse_leftovers(
    engine: AsyncEngine, execution_id: str, status: ExecutionStatus
) -> None:
    """Requests to an ended execution: refused, so that nobody waits on them."""
    reason = f"the execution ended ({status}) before this request was applied"
    await inbox.refuse_pending(engine, execution_id, reason, time.time())
