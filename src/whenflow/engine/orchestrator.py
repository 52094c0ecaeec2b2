"""The dispatcher: one owner of an execution's state on one asyncio loop (DESIGN.md §5, §7).

Every change goes through a synchronous handler (an attempt's result, a timer,
a task's custom event, a cancel). A handler makes its transitions, appends the
rows they produce to the unit's records, lets the trigger index decide which
nodes start, skip or stop, and finally hands the whole unit to the store's
ordered write buffer in one `append` — so a node's state, its variables and its
events always reach the database in the same commit, and the loop never waits
for the database.

The state and its primitive moves are `ExecutionState`; the rules are in
`attempts` (one attempt), `foreach`, `endings` (stop, cancel, fail, skip,
quiescence, the final status), `recovery` and `settling` (what follows from a
unit's changes). This module runs units of work.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from whenflow.domain.errors import StoreError
from whenflow.domain.events import PIPELINE_SOURCE, Event
from whenflow.domain.records import (
    ExecutionCreated,
    ExecutionSnapshot,
    ExecutionUpdated,
    InboxMessage,
    Record,
    VariableWritten,
)
from whenflow.domain.states import ExecutionStatus
from whenflow.dsl.program import PipelineProgram
from whenflow.engine import deadlines, recovery, stopping
from whenflow.engine.approvals import decide
from whenflow.engine.attempt_context import DEFAULT_TASK_LOG_LIMIT
from whenflow.engine.cleanup import cancel, cut_finally
from whenflow.engine.each_events import install_each
from whenflow.engine.endings import (
    end_all,
)
from whenflow.engine.execution_state import DEFAULT_CONCURRENCY, ExecutionState, LogListener
from whenflow.engine.inbox_messages import (
    DEFAULT_POLL_INTERVAL_S,
    apply_message,
    poll_inbox,
    read_inbox,
    refusals_at_end,
)
from whenflow.engine.ports import ArtifactStore, SecretStore, StateStore, TaskRunner
from whenflow.engine.runtime import ExecutionResult, NodeOutcome, NodeRuntime, cycle_of
from whenflow.engine.secret_masking import SecretMask
from whenflow.engine.settling import settle
from whenflow.engine.subpipelines import cancel_orphans
from whenflow.engine.template_helpers import install_helpers
from whenflow.engine.variable_pool import VariablePool

__all__ = ["DEFAULT_CONCURRENCY", "EventListener", "Orchestrator"]

EventListener = Callable[[Event], None]
_log = logging.getLogger("whenflow.engine")


class Orchestrator:
    """Runs one execution of a compiled pipeline to a terminal status."""

    def __init__(
        self,
        program: PipelineProgram,
        *,
        store: StateStore,
        runner: TaskRunner,
        artifacts: ArtifactStore | None = None,
        inputs: Mapping[str, Any] | None = None,
        execution_id: str | None = None,
        on_event: EventListener | None = None,
        clock: Callable[[], float] = time.time,
        offload_bytes: int = 1024 * 1024,
        parent_execution_id: str | None = None,
        inbox_poll_s: float | None = DEFAULT_POLL_INTERVAL_S,
        secrets: SecretStore | None = None,
        mask: SecretMask | None = None,
        on_log: LogListener | None = None,
        task_log_limit: int | None = DEFAULT_TASK_LOG_LIMIT,
        shared_inbox: bool = False,
    ) -> None:
        """Args (besides the obvious):
        on_log: called with every task log line as stored (masked, within the cap).
        task_log_limit: bytes one attempt may log; later lines are dropped and
            one last line says how much (None: no limit).
        inbox_poll_s: how often to read the store's inbox for decisions, events
            and cancels from other processes; None never reads it. A child
            execution (of a `pipeline` task) reads it only if it has approval
            nodes or waits for `external.*` events: its parent cancels it.
        """
        definition = program.definition
        self.parent_execution_id = parent_execution_id
        self._inbox_poll_s = inbox_poll_s
        self._shared_inbox = shared_inbox
        self.live = False
        """Set once started or resumed: from then on `deliver` may hand it messages."""
        self.status_listeners: list[Callable[[ExecutionStatus], None]] = []
        """Called with the status after each unit of work that changed it."""
        self._reported: ExecutionStatus | None = None
        if parent_execution_id is not None and not program.listens_outside:
            self._inbox_poll_s = None
        self._poller: asyncio.Task[None] | None = None
        self._store_failure: asyncio.Future[StoreError] | None = None
        self._store_error: StoreError | None = None
        execution_id = execution_id or str(uuid.uuid4())
        pool = VariablePool(
            execution_id=execution_id,
            pipeline=definition.name,
            version=definition.version,
            inputs=inputs or {},
            node_ids=definition.node_ids,
            started_at=clock(),
            artifacts=artifacts,
            offload_bytes=offload_bytes,
        )
        self.state = ExecutionState(
            program,
            execution_id=execution_id,
            pool=pool,
            store=store,
            runner=runner,
            clock=clock,
            run_unit=self._unit,
            secrets=secrets,
            mask=mask,
        )
        if on_event is not None:
            self.state.listeners.append(on_event)
        if on_log is not None:
            self.state.log_listeners.append(on_log)
        self.state.task_log_limit = task_log_limit
        self.state.start_child = self._child
        install_helpers(self.state)
        install_each(self.state)
        if self._inbox_poll_s is not None:
            self.state.read_inbox = functools.partial(read_inbox, self.state)

    def _child(
        self, program: PipelineProgram, *, inputs: Mapping[str, Any], execution_id: str | None
    ) -> Orchestrator:
        """The dispatcher of a child execution (a `pipeline` task) of this one."""
        s = self.state
        child = Orchestrator(
            program,
            store=s.store,
            runner=s.runner,
            artifacts=s.pool.artifacts,
            inputs=inputs,
            execution_id=execution_id,
            clock=s.clock,
            parent_execution_id=s.execution_id,
            secrets=s.secrets,
            mask=s.mask,  # secrets bound into its inputs stay masked in the child too
            task_log_limit=s.task_log_limit,
            shared_inbox=s.on_child is not None,
        )
        if s.on_child is not None:  # a host runs this execution: it reads the child's inbox
            child.state.on_child = s.on_child
            s.on_child(child)
        return child

    # ------------------------------------------------------------- read side

    @property
    def execution_id(self) -> str:
        return self.state.execution_id

    @property
    def started(self) -> bool:
        """Whether its loop runs (it was started or resumed)."""
        return self.state.loop is not None

    @property
    def program(self) -> PipelineProgram:
        return self.state.program

    @property
    def pool(self) -> VariablePool:
        return self.state.pool

    @property
    def nodes(self) -> Mapping[str, NodeRuntime]:
        return self.state.nodes

    @property
    def events(self) -> list[Event]:
        return self.state.events

    @property
    def status(self) -> ExecutionStatus:
        return self.state.status

    def add_listener(self, listener: EventListener) -> None:
        """Call `listener` with every event this execution publishes from now on."""
        self.state.listeners.append(listener)

    def result(self) -> ExecutionResult:
        s = self.state
        mask = s.mask.value if s.mask else _unmasked
        nodes = {
            rt.id: NodeOutcome(
                status=rt.state,
                attempts=rt.attempt,
                outputs=mask(s.pool.result_outputs(rt.id)),
                error=mask(rt.error),
                reason=mask(rt.reason),
            )
            for rt in s.node_list
        }
        return ExecutionResult(
            execution_id=s.execution_id,
            pipeline=s.definition.name,
            version=s.definition.version,
            status=s.status,
            outputs=mask(dict(s.outputs)),
            nodes=nodes,
            events=tuple(e.event_type for e in s.events),
            error=mask(s.error),
            cycle=cycle_of(s.pool.system),
        )

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Create the execution, publish `pipeline.started` and dispatch what can start.

        Nothing runs before the execution is durable: its creation (and, in a
        real store, its owner row) is committed first, one flush per execution.
        Returns once the first events are durable too.

        Raises:
            StoreError: the creation could not be committed; nothing ran.
        """
        s = self.state
        self._activate()
        now = s.clock()
        created: list[Record] = [
            ExecutionCreated(
                execution_id=s.execution_id,
                pipeline_name=s.definition.name,
                pipeline_version=s.definition.version,
                definition_text=s.definition.source_text or "",
                definition_path=s.definition.source_path,
                inputs=dict(s.pool.inputs),
                created_at=now,
                parent_execution_id=self.parent_execution_id,
            )
        ]
        created.extend(VariableWritten(s.execution_id, v) for v in s.pool.input_variables(now))
        s.store.append(s.mask.records(created) if s.mask else created)
        await s.store.flush()
        s.register_trees()
        self._unit(self._begin)
        await s.store.flush()
        self._start_poller()

    def _begin(self) -> None:
        s = self.state
        deadlines.arm(s)  # the pipeline timeout; nothing has started yet
        s.publish("pipeline.started", PIPELINE_SOURCE, {"inputs": dict(s.pool.inputs)})
        s.index.settle_unreferenced()
        s.decisions.extend((tree, bool(tree.value)) for tree in s.predecided)

    async def resume(
        self, snapshot: ExecutionSnapshot, *, cancel: str | None = None
    ) -> ExecutionResult:
        """Continue an execution whose process died, from its durable state.

        The store is asked to own the execution first (refused while another
        process does). Requests that reached the inbox while nobody ran the
        execution (a cancel, a decision, an event) are applied before any lost
        or retrying attempt is relaunched, so a cancel never reruns work;
        `cancel` (a reason) cancels it the same way.
        """
        s = self.state
        await s.store.claim(s.execution_id)
        self._activate()
        item_results = recovery.restore(s, snapshot)
        s.register_trees()
        for event in snapshot.events:
            s.index.on_event(event)
        s.index.settle_unreferenced()
        s.decisions.clear()  # replaying decides what already happened; reconcile re-decides
        messages = []
        if self._inbox_poll_s is not None:
            messages = list(await s.store.pending_messages(s.execution_id))
        s.admission_held = True
        if snapshot.events:
            self._unit(recovery.reconcile, s, snapshot, item_results)
        else:  # durable since its creation, stopped before it started: start it now
            self._unit(self._begin)
        for message in messages:
            self._unit(apply_message, s, message)
        if cancel is not None:
            self._unit(self._cancel_handler, cancel)
        s.admission_held = False
        self._unit(_nothing)  # admits what is still due
        await s.store.flush()
        await cancel_orphans(s)  # children whose nodes ended before adopting them
        self._start_poller()
        return await self.wait()

    async def wait(self) -> ExecutionResult:
        """Wait for the terminal status; every write is durable when this returns."""
        s = self.state
        assert s.done is not None, "call start() first"
        try:
            await asyncio.shield(s.done)
        finally:
            if s.done.done():  # a cancelled wait() leaves the execution, and its poller, be
                if self._store_failure is not None:
                    self._store_failure.remove_done_callback(self._on_store_failure)
                if self._poller is not None:
                    self._poller.cancel()
                    await asyncio.gather(self._poller, return_exceptions=True)
                while s.tasks:
                    pending = list(s.tasks)
                    await asyncio.gather(*pending, return_exceptions=True)
                    s.tasks.difference_update(pending)
        if self._store_error is not None:
            raise self._store_error
        if self._inbox_poll_s is not None:
            # Requests that came too late must not wait for an answer forever.
            leftovers = await s.store.pending_messages(s.execution_id)
            s.store.append(refusals_at_end(s, leftovers))
        await s.store.flush()
        return self.result()

    async def halt(self) -> None:
        """Stop this process's work on the execution without ending it (Ctrl-C, SIGTERM).

        Running attempts are cancelled and awaited (their process groups are
        killed), nothing new is admitted, and the execution stays `running` in
        the store: `resume` continues it, with new attempts for what was cut.
        """
        await stopping.halt(self.state, self._poller)

    async def ended(self) -> None:
        """Wait for the terminal status only; cancelling this wait leaves the execution be."""
        assert self.state.done is not None, "call start() first"
        await asyncio.shield(self.state.done)

    async def run(self) -> ExecutionResult:
        await self.start()
        return await self.wait()

    def cancel(self, reason: str = "cancelled by request") -> None:
        """Cancel the execution: running tasks are cancelled, nothing new starts but the
        finally nodes (bounded by `finallyGrace`); a second cancel ends those at once."""
        if self.state.loop is None:
            raise RuntimeError("the execution has not started")
        self._unit(self._cancel_handler, reason)

    def _cancel_handler(self, reason: str) -> None:
        cancel(self.state, reason)  # a second cancel ends the finally nodes at once

    def post_external_event(self, name: str, payload: Mapping[str, Any] | None = None) -> None:
        """Publish `external.<name>` into this running execution."""
        self._unit(self._publish_external, name, dict(payload or {}))

    def _publish_external(self, name: str, payload: dict[str, Any]) -> None:
        self.state.publish(f"external.{name}", "external", payload)

    def decide(self, node_id: str, approved: bool, by: str, comment: str = "") -> str | None:
        """Approve or reject a waiting approval node in this process.

        Returns why the decision was refused (the node is not waiting, `by`
        is not among its approvers), or None once it is applied. Another
        process posts to the inbox instead (`whenflow approve`).
        """
        if node_id not in self.state.nodes:
            raise KeyError(f"the pipeline has no node {node_id!r}")
        refusal: list[str | None] = ["the execution has ended"]

        def handler() -> None:
            refusal[0] = decide(self.state, self.state.nodes[node_id], approved, by, comment)

        self._unit(handler)
        return refusal[0]

    def deliver(self, message: InboxMessage) -> None:
        """Apply an inbox message now, once; its `InboxApplied` is durable at the next flush."""
        if self.state.loop is None:
            raise RuntimeError("the execution has not started")
        self._unit(apply_message, self.state, message)

    def hold(self) -> None:
        """Start no new attempt from now on (a stopping server); running ones go on."""
        self.state.admission_held = True

    async def drain(self, grace_s: float) -> None:
        """Halt gently: running attempts get `grace_s` seconds to finish first."""
        await stopping.drain(self.state, self._poller, grace_s)

    def _start_poller(self) -> None:
        """Read the inbox from now on, every `inbox_poll_s` seconds, until the end."""
        s = self.state
        self.live = True
        if self._shared_inbox or self._inbox_poll_s is None:
            return
        if s.status.is_terminal or self._poller is not None:
            return
        assert s.loop is not None
        self._poller = s.loop.create_task(
            poll_inbox(s, self._inbox_poll_s), name=f"whenflow-inbox:{s.execution_id}"
        )

    def _activate(self) -> None:
        s = self.state
        s.loop = asyncio.get_running_loop()
        s.done = s.loop.create_future()
        self._store_failure = s.store.failure()
        self._store_failure.add_done_callback(self._on_store_failure)

    def _on_store_failure(self, failure: asyncio.Future[StoreError]) -> None:
        self._store_failed(failure.result())

    def _store_failed(self, error: StoreError) -> None:
        if self._store_error is None and stopping.store_failed(self.state):
            self._store_error = error
            self.state.error = str(error)

    # ------------------------------------------------------- the unit of work

    def _unit(self, action: Callable[..., None], *args: Any) -> None:
        """Run one handler, settle its consequences, and hand its rows to the store."""
        s = self.state
        try:
            if not s.status.is_terminal:
                action(*args)
                settle(self.state)
        except Exception as exc:
            self._internal_error(exc)
        finally:
            if s.records:
                records, s.records = s.records, []
                try:
                    s.store.append(s.mask.records(records) if s.mask else records)
                except StoreError as exc:
                    self._store_failed(exc)
            if s.status is not self._reported and self.status_listeners:
                self._reported = s.status
                for listener in self.status_listeners:
                    listener(s.status)

    def _internal_error(self, exc: Exception) -> None:
        """A bug in whenflow: end the execution as failed rather than hang it.

        The rows the handler already produced stay (memory and log agree, and
        `seq` keeps no gaps); everything unfinished is cancelled, finally nodes too.
        """
        s = self.state
        _log.exception("internal error in execution %s", s.execution_id)
        s.error = f"internal error: {type(exc).__name__}: {exc}"
        try:
            if s.ending is None:
                end_all(s, ExecutionStatus.FAILED, s.error)
            cut_finally(s, s.error)
            settle(self.state)
        except Exception:
            _log.exception("could not end execution %s cleanly", s.execution_id)
        if not s.status.is_terminal:
            s.status = ExecutionStatus.FAILED
            now = s.clock()
            s.records.append(ExecutionUpdated(s.execution_id, s.status, now, now, {}, s.error))
        if s.done is not None and not s.done.done():
            s.done.set_result(None)


def _unmasked(value: Any) -> Any:
    return value


def _nothing() -> None:
    """A unit that only settles (admits, finishes)."""
