"""The dispatcher: one owner of an execution's state on one asyncio loop (DESIGN.md §5, §7).

Every change goes through a synchronous handler (an attempt's result, a timer,
a task's custom event, a cancel). A handler makes its transitions, appends the
rows they produce to a per-unit list, lets the trigger index decide which
nodes start, skip or stop, and finally hands the whole unit to the store's
ordered write buffer in one `append` — so a node's state, its variables and its
events always reach the database in the same commit, and the loop never waits
for the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from whenflow.domain.events import PIPELINE_SOURCE, Event
from whenflow.domain.records import (
    AttemptRecorded,
    EventAppended,
    ExecutionCreated,
    ExecutionSnapshot,
    ExecutionUpdated,
    LogAppended,
    NodeUpdated,
    Record,
    VariableWritten,
)
from whenflow.domain.states import TERMINAL_EVENT_SUFFIX, ExecutionStatus, NodeState
from whenflow.dsl.program import PipelineProgram
from whenflow.dsl.templates import Missing, TemplateEvaluationError, compile_condition
from whenflow.engine.attempts import is_current, launch
from whenflow.engine.endings import (
    cancel_work,
    end_all,
    finish,
    set_waiting,
    skip_one_unsatisfiable,
    stop_node,
)
from whenflow.engine.foreach import launch_item, start_foreach
from whenflow.engine.ports import ArtifactStore, StateStore, TaskRunner
from whenflow.engine.runtime import NO_ITEM, ExecutionResult, NodeOutcome, NodeRuntime
from whenflow.engine.template_helpers import install_helpers
from whenflow.engine.transitions import transition
from whenflow.engine.trigger_eval import ConditionLeaf, TriggerTree
from whenflow.engine.trigger_index import TriggerIndex
from whenflow.engine.variable_pool import VariablePool

EventListener = Callable[[Event], None]
_log = logging.getLogger("whenflow.engine")
# Task attempts running at once when a pipeline sets no `concurrency`. Unbounded,
# a 10,000-wide fan-out of sync tasks keeps 10,000 attempts alive against a
# 6-thread pool and runs measurably superlinear; Airflow bounds it by default too.
DEFAULT_CONCURRENCY = 64
_ids = random.Random()


def _event_id() -> str:
    """A random 128-bit id: unique, not secret, so no system call per event."""
    return f"{_ids.getrandbits(128):032x}"


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
    ) -> None:
        self.program = program
        self.definition = program.definition
        self.execution_id = execution_id or str(uuid.uuid4())
        self._store = store
        self._runner = runner
        self._clock = clock
        self._listeners: list[EventListener] = [on_event] if on_event else []
        self.started_at = clock()
        self.pool = VariablePool(
            execution_id=self.execution_id,
            pipeline=self.definition.name,
            version=self.definition.version,
            inputs=inputs or {},
            node_ids=self.definition.node_ids,
            started_at=self.started_at,
            artifacts=artifacts,
            offload_bytes=offload_bytes,
        )
        self.events: list[Event] = []
        self.status = ExecutionStatus.RUNNING
        self.error: str | None = None
        self.outputs: dict[str, Any] = {}
        self._seq = 0
        self._records: list[Record] = []
        self._decisions: deque[tuple[TriggerTree, bool]] = deque()
        self._condition_errors: deque[tuple[TriggerTree, str]] = deque()
        self._ready: deque[tuple[str, int]] = deque()
        self._running = 0
        self._timers = 0
        self._waiting_nodes = 0
        self._non_terminal = len(program.nodes)
        self._ending: ExecutionStatus | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._within_handles: list[asyncio.TimerHandle] = []
        self.attempt_starts: dict[tuple[str, int, int], float] = {}
        self.quiescence_cursor = 0  # nodes before it were not undecided at the last skip
        self.index = TriggerIndex(self.definition.node_ids, self._evaluate_condition)
        self.nodes: dict[str, NodeRuntime] = {}
        for node in program.nodes:
            start = self._tree(node.id, "start", node.start)
            stop = self._tree(node.id, "stop", node.stop) if node.stop is not None else None
            self.nodes[node.id] = NodeRuntime(node, start, stop)
        self.node_list = list(self.nodes.values())
        self.pipeline_stop = (
            self._tree(PIPELINE_SOURCE, "pipeline_stop", program.stop) if program.stop else None
        )
        # Trees made only of literals are decided when built and never call back.
        self._predecided = [
            tree
            for rt in self.nodes.values()
            for tree in (rt.start_tree, rt.stop_tree)
            if tree is not None and tree.value is not None
        ]
        if self.pipeline_stop is not None and self.pipeline_stop.value is not None:
            self._predecided.append(self.pipeline_stop)
        install_helpers(self)

    # ----------------------------------------------------------------- setup

    def _tree(self, owner: str, kind: Any, expr: Any) -> TriggerTree:
        return TriggerTree(owner, kind, expr, compile_condition, self._on_decided)

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def _register_trees(self) -> None:
        def terminal(node_id: str) -> bool:
            return self.nodes[node_id].state.is_terminal

        for rt in self.nodes.values():
            self.index.register(rt.start_tree, terminal)
            if rt.stop_tree is not None:
                self.index.register(rt.stop_tree, terminal)
        if self.pipeline_stop is not None:
            self.index.register(self.pipeline_stop, terminal)

    def _arm_within(self) -> None:
        assert self._loop is not None
        for rt in self.nodes.values():
            within = rt.program.definition.within_s
            if within is not None and self.index.external_leaves.get(rt.id):
                delay = max(0.0, self.started_at + within - self._clock())
                handle = self._loop.call_later(delay, self._unit, self._within_expired, rt.id)
                self._within_handles.append(handle)

    async def start(self) -> None:
        """Create the execution, publish `pipeline.started` and dispatch what can start.

        Returns once the execution row and its first events are durable.
        """
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        now = self._clock()
        self._records.append(
            ExecutionCreated(
                execution_id=self.execution_id,
                pipeline_name=self.definition.name,
                pipeline_version=self.definition.version,
                definition_text=self.definition.source_text or "",
                definition_path=self.definition.source_path,
                inputs=dict(self.pool.inputs),
                created_at=now,
            )
        )
        self._records.extend(
            VariableWritten(self.execution_id, v) for v in self.pool.input_variables(now)
        )
        self._register_trees()
        self._arm_within()
        self._unit(self._begin)
        await self._store.flush()

    def _begin(self) -> None:
        self._publish("pipeline.started", PIPELINE_SOURCE, {"inputs": dict(self.pool.inputs)})
        self.index.settle_unreferenced()
        self._decisions.extend((tree, bool(tree.value)) for tree in self._predecided)

    async def wait(self) -> ExecutionResult:
        """Wait for the terminal status; every write is durable when this returns."""
        assert self._done is not None, "call start() first"
        try:
            await asyncio.shield(self._done)
        finally:
            await self._drain_tasks()
        await self._store.flush()
        return self.result()

    async def run(self) -> ExecutionResult:
        await self.start()
        return await self.wait()

    async def resume(self, snapshot: ExecutionSnapshot) -> ExecutionResult:
        """Continue an execution whose process died, from its durable state."""
        from whenflow.engine.recovery import resume_execution

        await resume_execution(self, snapshot)
        return await self.wait()

    async def _drain_tasks(self) -> None:
        while self._tasks:
            pending = list(self._tasks)
            await asyncio.gather(*pending, return_exceptions=True)
            self._tasks.difference_update(pending)

    def result(self) -> ExecutionResult:
        nodes = {
            rt.id: NodeOutcome(
                status=rt.state,
                attempts=rt.attempt,
                outputs=self.pool.result_outputs(rt.id),
                error=rt.error,
                reason=rt.reason,
            )
            for rt in self.nodes.values()
        }
        return ExecutionResult(
            execution_id=self.execution_id,
            pipeline=self.definition.name,
            version=self.definition.version,
            status=self.status,
            outputs=dict(self.outputs),
            nodes=nodes,
            events=tuple(e.event_type for e in self.events),
            error=self.error,
        )

    # ------------------------------------------------------- the unit of work

    def _unit(self, action: Callable[..., None], *args: Any) -> None:
        """Run one handler, settle its consequences, and hand its rows to the store."""
        try:
            if not self.status.is_terminal:
                action(*args)
                self._settle()
        except Exception as exc:
            self._internal_error(exc)
        finally:
            if self._records:
                records, self._records = self._records, []
                self._store.append(records)

    def _internal_error(self, exc: Exception) -> None:
        """A bug in whenflow: end the execution as failed rather than hang it.

        The rows the handler already produced stay (memory and log agree, and
        `seq` keeps no gaps); everything unfinished is cancelled.
        """
        _log.exception("internal error in execution %s", self.execution_id)
        self.error = f"internal error: {type(exc).__name__}: {exc}"
        try:
            if self._ending is None:
                end_all(self, ExecutionStatus.FAILED, self.error)
            self._settle()
        except Exception:
            _log.exception("could not end execution %s cleanly", self.execution_id)
        if not self.status.is_terminal:
            self.status = ExecutionStatus.FAILED
            now = self._clock()
            self._records.append(
                ExecutionUpdated(self.execution_id, self.status, now, now, {}, self.error)
            )
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _settle(self) -> None:
        while True:
            self._drain_decisions()
            self._admit_ready()
            if self._decisions or self._condition_errors:
                continue
            if self.status.is_terminal:
                return
            if self._non_terminal == 0:
                finish(
                    self,
                )
                return
            if self._running or self._timers or self._ready or self._waiting_nodes:
                if self.status is ExecutionStatus.WAITING:  # an external event restarted work
                    self.status = ExecutionStatus.RUNNING
                    self._records.append(
                        ExecutionUpdated(self.execution_id, self.status, self._clock())
                    )
                return
            if not skip_one_unsatisfiable(
                self,
            ):
                set_waiting(
                    self,
                )
                return

    def _drain_decisions(self) -> None:
        while self._decisions or self._condition_errors:
            if self._condition_errors:
                tree, message = self._condition_errors.popleft()
                self._condition_failed(tree, message)
                continue
            tree, value = self._decisions.popleft()
            if tree.kind == "pipeline_stop":
                if value and self._ending is None:
                    end_all(self, ExecutionStatus.STOPPED, f"pipeline stopWhen: {tree.explain()}")
                continue
            rt = self.nodes[tree.owner]
            if rt.state.is_terminal or self._ending is not None:
                continue
            if tree.kind == "start":
                if rt.state is NodeState.PENDING and not rt.queued:
                    if value:
                        self._request_start(rt)
                    else:
                        self._skip(rt, f"startWhen is false: {tree.explain()}")
            elif value:
                stop_node(self, rt, f"stopWhen: {tree.explain()}")

    def _on_decided(self, tree: TriggerTree, value: bool) -> None:
        self._decisions.append((tree, value))

    def _evaluate_condition(self, leaf: ConditionLeaf) -> None:
        try:
            value = leaf.template.evaluate(self.pool.context)
        except TemplateEvaluationError as exc:
            leaf.error = str(exc)
            self._condition_errors.append(
                (leaf.tree, f"{{{{ {leaf.template.info.source} }}}}: {exc.reason}")
            )
            return
        leaf.settle(bool(value) and not isinstance(value, Missing))

    def _condition_failed(self, tree: TriggerTree, message: str) -> None:
        if tree.kind == "pipeline_stop":
            if self._ending is None:
                self.error = f"pipeline stopWhen failed: {message}"
                end_all(self, ExecutionStatus.FAILED, self.error)
            return
        rt = self.nodes[tree.owner]
        if rt.state.is_terminal:
            return
        field = "startWhen" if tree.kind == "start" else "stopWhen"
        cancel_work(self, rt)
        self._fail(rt, "ExpressionError", f"{field} {message}")

    # ---------------------------------------------------------------- events

    def _publish(
        self, event_type: str, source: str, payload: Mapping[str, Any] | None = None
    ) -> Event:
        self._seq += 1
        event = Event(
            event_id=_event_id(),
            execution_id=self.execution_id,
            seq=self._seq,
            event_type=event_type,
            source=source,
            timestamp=self._clock(),
            payload=payload or {},
        )
        self.events.append(event)
        self._records.append(EventAppended(event))
        self.index.on_event(event)
        for listener in self._listeners:
            listener(event)
        return event

    def _publish_only(self, event_type: str, source: str, payload: Mapping[str, Any]) -> None:
        self._publish(event_type, source, payload)

    def _node_row(self, rt: NodeRuntime) -> None:
        self._records.append(
            NodeUpdated(
                execution_id=self.execution_id,
                node_id=rt.id,
                state=rt.state,
                attempts=rt.attempt,
                updated_at=self._clock(),
                started_at=rt.started_at,
                finished_at=rt.finished_at,
                error=rt.error,
                reason=rt.reason,
            )
        )

    def _move(self, rt: NodeRuntime, target: NodeState) -> None:
        transition(rt.id, rt.state, target)
        rt.state = target
        if target.is_terminal:
            rt.finished_at = self._clock()
            self._non_terminal -= 1

    def _terminal(self, rt: NodeRuntime, target: NodeState, payload: Mapping[str, Any]) -> None:
        """Move to a terminal state, write its row and event, and count down its waiters."""
        self._move(rt, target)
        self._node_row(rt)
        self._publish(f"{rt.id}.{TERMINAL_EVENT_SUFFIX[target]}", rt.id, payload)
        self.index.on_terminal(rt.id)

    # --------------------------------------------------------- node lifecycle

    def idempotency_key(self, node_id: str, item_index: int | None) -> str:
        key = f"{self.execution_id}/{node_id}"
        return key if item_index is None else f"{key}/{item_index}"

    def _request_start(self, rt: NodeRuntime) -> None:
        if rt.program.for_each is not None:
            start_foreach(self, rt)
            return
        rt.queued = True
        self._ready.append((rt.id, NO_ITEM))

    def _has_slot(self) -> bool:
        return self._running < (self.definition.concurrency or DEFAULT_CONCURRENCY)

    def _admit_ready(self) -> None:
        while self._ready and self._has_slot():
            node_id, index = self._ready.popleft()
            rt = self.nodes[node_id]
            rt.queued = False
            if rt.state.is_terminal or self._ending is not None:
                continue
            if index == NO_ITEM:
                launch(self, rt)
            else:
                launch_item(self, rt, index)

    def _attempt_row(
        self,
        node_id: str,
        item_index: int,
        attempt: int,
        status: NodeState,
        error_type: str | None = None,
        message: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """Upsert one attempt row; a running row remembers its start for its final row."""
        now = self._clock()
        key = (node_id, item_index, attempt)
        if status is NodeState.RUNNING:
            self.attempt_starts[key] = started_at = now if started_at is None else started_at
        elif started_at is None:
            started_at = self.attempt_starts.pop(key, now)
        self._records.append(
            AttemptRecorded(
                execution_id=self.execution_id,
                node_id=node_id,
                item_index=item_index,
                attempt=attempt,
                status=status,
                idempotency_key=self.idempotency_key(
                    node_id, None if item_index == NO_ITEM else item_index
                ),
                started_at=started_at,
                finished_at=None if status is NodeState.RUNNING else now,
                error_type=error_type,
                error_message=message,
            )
        )

    def _call_later(
        self, delay: float, handler: Callable[..., None], *args: Any
    ) -> asyncio.TimerHandle:
        assert self._loop is not None
        self._timers += 1

        def fire() -> None:
            self._timers -= 1
            self._unit(handler, *args)

        return self._loop.call_later(delay, fire)

    def _cancel_timer(self, handle: asyncio.TimerHandle | None) -> None:
        if handle is not None and not handle.cancelled():
            handle.cancel()
            self._timers -= 1

    def _fail(self, rt: NodeRuntime, error_type: str, message: str) -> None:
        rt.error = message
        self._terminal(
            rt,
            NodeState.FAILED,
            {"error_type": error_type, "message": message, "attempt": rt.attempt},
        )
        if (
            not rt.program.definition.allow_failure
            and self.definition.fail_fast
            and self._ending is None
        ):
            end_all(self, ExecutionStatus.FAILED, f"failFast: node {rt.id!r} failed")

    def _skip(self, rt: NodeRuntime, reason: str) -> None:
        rt.reason = reason
        self._terminal(rt, NodeState.SKIPPED, {"reason": reason})

    def cancel(self, reason: str = "cancelled by request") -> None:
        """Cancel the execution: running tasks are cancelled, nothing new starts."""
        if self._loop is None:
            raise RuntimeError("the execution has not started")
        self._unit(self._cancel_handler, reason)

    def _cancel_handler(self, reason: str) -> None:
        if self._ending is None:
            end_all(self, ExecutionStatus.CANCELLED, reason)

    def post_external_event(self, name: str, payload: Mapping[str, Any] | None = None) -> None:
        """Publish `external.<name>` into this running execution."""
        self._unit(self._publish_only, f"external.{name}", "external", dict(payload or {}))

    def _within_expired(self, node_id: str) -> None:
        self.index.expire_external(node_id)

    def _on_emit(
        self, node_id: str, attempt: int, item: int, name: str, payload: Mapping[str, Any]
    ) -> None:
        rt = self.nodes[node_id]
        if not is_current(rt, attempt, None if item == NO_ITEM else item):
            return
        body = {**payload, "attempt": attempt}
        if item != NO_ITEM:
            body["index"] = item
        self._unit(self._publish_only, f"{node_id}.{name}", node_id, body)

    def _on_log(self, node_id: str, attempt: int, item: int, stream: str, message: str) -> None:
        self._store.append(
            [LogAppended(self.execution_id, node_id, attempt, item, stream, message, self._clock())]
        )
