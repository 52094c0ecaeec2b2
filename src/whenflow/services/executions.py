"""Run, resume and inspect executions against the durable store (DESIGN.md §7, §9)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from whenflow.domain.connections import ConnectionResolver
from whenflow.domain.definitions import TaskDefinition
from whenflow.domain.errors import RequestRefused, StoreError, WhenflowError
from whenflow.domain.events import Event
from whenflow.domain.param_types import resolve_inputs
from whenflow.domain.records import ExecutionSnapshot, InboxMessage, LogAppended, MessageKind
from whenflow.domain.states import ExecutionStatus
from whenflow.domain.variables import ArtifactRef
from whenflow.dsl.program import PipelineProgram
from whenflow.engine.attempt_context import DEFAULT_TASK_LOG_LIMIT
from whenflow.engine.orchestrator import Orchestrator
from whenflow.engine.ports import TaskRunner
from whenflow.engine.runtime import ExecutionResult
from whenflow.services import request_checks
from whenflow.services.artifact_refs import referenced_artifacts
from whenflow.services.connections import process_connections, seed_mask
from whenflow.services.execution_reads import ExecutionReads
from whenflow.services.notifications import (
    Notifier,
    listener,
)
from whenflow.services.pipelines import default_runner, load_stored_program
from whenflow.services.settings import Settings
from whenflow.storage import inbox, queries
from whenflow.storage.artifacts import FsspecArtifactStore
from whenflow.storage.connections import EnvironmentConnections
from whenflow.storage.database import make_engine, upgrade
from whenflow.storage.inbox import MessageState
from whenflow.storage.leases import LeasePolicy
from whenflow.storage.s3_artifacts import open_artifact_store

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.storage.secrets import secret_store
from whenflow.storage.state_store import SqlStateStore

EventListener = Callable[[Event], None]
NOTIFY_DRAIN_S = 60.0
"""How long closing the service waits for notifications still being sent."""
LogListener = Callable[[LogAppended], None]
_log = logging.getLogger(__name__)


class ExecutionService(ExecutionReads):
    """The use cases of executions; open it with `async with ExecutionService.open()`."""

    def __init__(
        self,
        store: SqlStateStore,
        artifacts: FsspecArtifactStore,
        runner: TaskRunner,
        settings: Settings | None = None,
        connections: ConnectionResolver | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """`notifier` sends the notifications of `spec.notify` (default: none are sent)."""
        self._store = store
        self._artifacts = artifacts
        self._runner = runner
        self._connections = connections or process_connections()
        self._secrets = secret_store()
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
        # A bad URL or connection fails first.
        artifacts = open_artifact_store(
            settings.artifacts_url, settings.artifacts_connection, EnvironmentConnections()
        )
        engine = make_engine(settings.database_url, durability=settings.durability)
        connections = process_connections()
        connections.locate()  # a connections file named but missing fails before any run
        own_runner = default_runner(connections) if runner is None else None
        task_runner: TaskRunner = runner or own_runner or default_runner(connections)
        store = SqlStateStore(
            engine,
            commit_timeout_s=settings.commit_timeout_s,
            lease=LeasePolicy.of(settings.lease_s),
            durability=settings.durability,
        )
        notifier = Notifier(
            engine,
            secrets=secret_store(),
            connections=connections,
            base_url=settings.base_url,
        )
        try:
            await upgrade(engine)
            async with store:
                try:
                    yield cls(store, artifacts, task_runner, settings, connections, notifier)
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
        orchestrator = self.orchestrator(
            program, resolved, execution_id=execution_id, on_event=on_event, on_log=on_log
        )
        result = await self.collect_garbage(await _halting(orchestrator, orchestrator.run()))
        return self.notified(program, result)

    def orchestrator(
        self,
        program: PipelineProgram,
        inputs: Mapping[str, Any],
        *,
        execution_id: str | None = None,
        on_event: EventListener | None = None,
        on_log: LogListener | None = None,
        shared_inbox: bool = False,
    ) -> Orchestrator:
        """The dispatcher of one execution of `program` with resolved `inputs`, not started."""
        return Orchestrator(
            program,
            store=self._store,
            runner=self._runner,
            artifacts=self._artifacts,
            secrets=self._secrets,
            mask=seed_mask(program, self._connections, self._secrets),
            inputs=inputs,
            execution_id=execution_id,
            on_event=self._listener(program, on_event),
            on_log=on_log,
            task_log_limit=self._log_limit,
            shared_inbox=shared_inbox,
        )

    def _listener(
        self, program: PipelineProgram, on_event: EventListener | None
    ) -> EventListener | None:
        return on_event if self.notifier is None else listener(self.notifier, program, on_event)

    def notified(self, program: PipelineProgram, result: ExecutionResult) -> ExecutionResult:
        """Send the notifications `result` calls for (in the background); `result`."""
        if self.notifier is not None:
            self.notifier.on_result(program.definition, result)
        return result

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
        claimed = await self.claim(execution_id, on_event=on_event, on_log=on_log)
        if isinstance(claimed, ExecutionResult):
            return claimed
        orchestrator, snapshot = claimed
        result = await self.collect_garbage(
            await _halting(orchestrator, orchestrator.resume(snapshot))
        )
        return self.notified(orchestrator.program, result)

    async def claim(
        self,
        execution_id: str,
        *,
        on_event: EventListener | None = None,
        on_log: LogListener | None = None,
        shared_inbox: bool = False,
        known_tasks: Mapping[str, TaskDefinition] | None = None,
    ) -> tuple[Orchestrator, ExecutionSnapshot] | ExecutionResult:
        """Own an unfinished execution and build its dispatcher, to `resume(snapshot)` it;
        a finished one is returned as its result. `known_tasks` resolve the
        `task: {ref: ...}` of a registry pipeline. Raises as `resume` does."""
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
            snapshot.definition_text,
            snapshot.definition_path,
            runner=self._runner,
            known_tasks=known_tasks,
        )
        orchestrator = self.orchestrator(
            program,
            snapshot.inputs,
            execution_id=execution_id,
            on_event=on_event,
            on_log=on_log,
            shared_inbox=shared_inbox,
        )
        return orchestrator, snapshot

    async def prepare_retry(
        self,
        execution_id: str,
        new_id: str,
        *,
        on_event: EventListener | None = None,
        shared_inbox: bool = False,
        known_tasks: Mapping[str, TaskDefinition] | None = None,
    ) -> tuple[Orchestrator, ExecutionSnapshot]:
        """Create execution `new_id` retrying the ended `execution_id` (durable on
        return) and its dispatcher, to `resume(snapshot)` it.

        Raises:
            ExecutionNotFound: no such execution.
            RequestRefused: it has not ended, it completed, or it is a sub-pipeline's.
        """
        from whenflow.engine.retries import retry_of

        old = await self._store.load_execution(execution_id)
        if not old.status.is_terminal or old.status is ExecutionStatus.COMPLETED:
            what = "completed: nothing to retry" if old.status.is_terminal else "not ended"
            raise RequestRefused(f"execution {execution_id} has {what} ({old.status})")
        if await queries.get_parent_id(self._store.engine, execution_id) is not None:
            raise RequestRefused(
                f"execution {execution_id} is a sub-pipeline's; retry its parent execution"
            )
        program = load_stored_program(
            old.definition_text, old.definition_path, runner=self._runner, known_tasks=known_tasks
        )
        records, snapshot = retry_of(old, new_id, time.time())
        self._store.append(records)
        await self._store.flush()
        orchestrator = self.orchestrator(
            program,
            old.inputs,
            execution_id=new_id,
            on_event=on_event,
            shared_inbox=shared_inbox,
        )
        return orchestrator, snapshot

    async def collect_garbage(self, result: ExecutionResult) -> ExecutionResult:
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
        await self.check_request(execution_id, kind, target, force=force)
        message_id = (await self.post(execution_id, kind, target, payload)).message_id
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

    async def post(
        self,
        execution_id: str,
        kind: MessageKind,
        target: str = "",
        payload: Mapping[str, Any] | None = None,
    ) -> InboxMessage:
        """Store one request in the execution's inbox, unchecked; durable on return.

        Raises:
            StoreError: the database cannot store it; nothing was sent.
        """
        now = time.time()
        body = dict(payload or {})
        try:
            message_id = await inbox.post(self._store.engine, execution_id, kind, target, body, now)
        except SQLAlchemyError as exc:  # a locked or full database: nothing was sent
            raise StoreError(
                f"could not store the request to execution {execution_id} "
                f"({_database_reason(exc)}); nothing was sent: try again"
            ) from exc
        return InboxMessage(message_id, execution_id, kind, target, body, now)

    async def check_request(
        self, execution_id: str, kind: MessageKind, target: str = "", *, force: bool = False
    ) -> None:
        """Refuse a request that cannot apply, before it is stored (see `send`).

        Raises:
            ExecutionNotFound: no such execution.
            NodeNotFound: a decision or stop names a node the pipeline lacks.
            RequestRefused: the request cannot apply now; the error says why.
        """
        await request_checks.check_request(
            self._store.engine, execution_id, kind, target, force=force
        )

    async def require_node(self, execution_id: str, node_id: str) -> None:
        """Raise ExecutionNotFound or NodeNotFound unless the execution has that node."""
        await request_checks.require_node(self._store.engine, execution_id, node_id)


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


async def _refuse_leftovers(
    engine: AsyncEngine, execution_id: str, status: ExecutionStatus
) -> None:
    """Requests to an ended execution: refused, so that nobody waits on them."""
    reason = f"the execution ended ({status}) before this request was applied"
    await inbox.refuse_pending(engine, execution_id, reason, time.time())
