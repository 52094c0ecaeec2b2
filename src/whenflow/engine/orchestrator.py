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
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from whenflow.domain.errors import BindingError, TaskTimeout
from whenflow.domain.events import PIPELINE_SOURCE, Event
from whenflow.domain.param_types import fits, type_name
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
from whenflow.domain.task_io import TaskRequest, TaskResult
from whenflow.dsl.compiled_values import contains_missing, render_value
from whenflow.dsl.program import PipelineProgram
from whenflow.dsl.templates import Missing, TemplateEvaluationError, compile_condition
from whenflow.engine.attempt_context import AttemptContext
from whenflow.engine.foreach import item_done, launch_item, start_foreach
from whenflow.engine.ports import ArtifactStore, StateStore, TaskRunner
from whenflow.engine.runtime import NO_ITEM, ExecutionResult, NodeOutcome, NodeRuntime
from whenflow.engine.template_helpers import install_helpers
from whenflow.engine.transitions import transition
from whenflow.engine.trigger_eval import ConditionLeaf, TriggerTree
from whenflow.engine.trigger_index import TriggerIndex, unknown_external
from whenflow.engine.variable_pool import OutputError, VariablePool

EventListener = Callable[[Event], None]


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
        self.index = TriggerIndex(self.definition.node_ids, self._evaluate_condition)
        self.nodes: dict[str, NodeRuntime] = {}
        for node in program.nodes:
            start = self._tree(node.id, "start", node.start)
            stop = self._tree(node.id, "stop", node.stop) if node.stop is not None else None
            self.nodes[node.id] = NodeRuntime(node, start, stop)
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
        finally:
            if self._records:
                records, self._records = self._records, []
                self._store.append(records)

    def _settle(self) -> None:
        while True:
            self._drain_decisions()
            self._admit_ready()
            if self._decisions or self._condition_errors:
                continue
            if self.status.is_terminal:
                return
            if self._non_terminal == 0:
                self._finish()
                return
            if self._running or self._timers or self._ready or self._waiting_nodes:
                return
            if not self._skip_one_unsatisfiable():
                self._set_waiting()
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
                    self._end_all(ExecutionStatus.STOPPED, f"pipeline stopWhen: {tree.explain()}")
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
                self._stop_node(rt, f"stopWhen: {tree.explain()}")

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
                self._end_all(ExecutionStatus.FAILED, self.error)
            return
        rt = self.nodes[tree.owner]
        if rt.state.is_terminal:
            return
        field = "startWhen" if tree.kind == "start" else "stopWhen"
        self._cancel_work(rt)
        self._fail(rt, "ExpressionError", f"{field} {message}")

    # ---------------------------------------------------------------- events

    def _publish(
        self, event_type: str, source: str, payload: Mapping[str, Any] | None = None
    ) -> Event:
        self._seq += 1
        event = Event(
            event_id=uuid.uuid4().hex,
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
            self._start_foreach(rt)
            return
        rt.queued = True
        self._ready.append((rt.id, NO_ITEM))

    def _has_slot(self) -> bool:
        limit = self.definition.concurrency
        return limit is None or self._running < limit

    def _admit_ready(self) -> None:
        while self._ready and self._has_slot():
            node_id, index = self._ready.popleft()
            rt = self.nodes[node_id]
            rt.queued = False
            if rt.state.is_terminal or self._ending is not None:
                continue
            if index == NO_ITEM:
                self._launch(rt)
            else:
                self._launch_item(rt, index)

    def _render_inputs(
        self, rt: NodeRuntime, context: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Inputs and rendered task config for one attempt; raises BindingError."""
        node = rt.program
        inputs: dict[str, Any] = {}
        signature = node.signature
        for name, compiled in node.bindings.items():
            try:
                value = render_value(compiled, context)
            except TemplateEvaluationError as exc:
                raise BindingError(node.id, name, exc.reason) from None
            spec = signature.inputs.get(name) if signature else None
            if contains_missing(value):
                if spec is not None and (not spec.required or spec.default is not None):
                    continue
                raise BindingError(
                    node.id,
                    name,
                    "reads a value that was never written (its node was skipped, "
                    "failed, or did not produce it)",
                )
            if spec is not None and not fits(value, spec.type):
                raise BindingError(
                    node.id, name, f"expects {spec.type} but the binding gave {type_name(value)}"
                )
            inputs[name] = value
        if signature is not None:
            for name, spec in signature.inputs.items():
                if name not in inputs and spec.default is not None:
                    inputs[name] = spec.default
        config = dict(rt.program.definition.task.config)
        for key, compiled in node.rendered_config.items():
            try:
                value = render_value(compiled, context)
            except TemplateEvaluationError as exc:
                raise BindingError(node.id, f"task.{key}", exc.reason) from None
            if contains_missing(value):
                raise BindingError(node.id, f"task.{key}", "reads a value that was never written")
            config[key] = value
        return inputs, config

    def _launch(self, rt: NodeRuntime) -> None:
        attempt = rt.attempt + 1
        try:
            context = self.pool.overlay({"system": self._system_view(attempt)})
            inputs, config = self._render_inputs(rt, context)
        except BindingError as exc:
            rt.attempt = attempt
            self._fail(rt, type(exc).__name__, str(exc))
            return
        self._move(rt, NodeState.RUNNING)
        rt.attempt = attempt
        if rt.started_at is None:
            rt.started_at = self._clock()
        self._node_row(rt)
        self._attempt_row(rt.id, NO_ITEM, attempt, NodeState.RUNNING)
        self._publish(f"{rt.id}.started", rt.id, {"attempt": attempt})
        rt.task = self._spawn(rt, attempt, None, inputs, config)

    def _system_view(self, attempt: int, item: tuple[Any, int] | None = None) -> Any:
        from whenflow.dsl.templates import Namespace

        values: dict[str, Any] = {**self.pool.system, "attempt": attempt}
        if item is not None:
            values["item"], values["index"] = item
        return Namespace("system", values)

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
        now = self._clock()
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
                started_at=started_at if started_at is not None else now,
                finished_at=None if status is NodeState.RUNNING else now,
                error_type=error_type,
                error_message=message,
            )
        )

    def _spawn(
        self,
        rt: NodeRuntime,
        attempt: int,
        item_index: int | None,
        inputs: Mapping[str, Any],
        config: Mapping[str, Any],
    ) -> asyncio.Task[None]:
        assert self._loop is not None
        definition = rt.program.definition
        task_spec = definition.task
        if config != task_spec.config:
            from dataclasses import replace

            task_spec = replace(task_spec, config=config)
        key = self.idempotency_key(rt.id, item_index)
        request = TaskRequest(
            execution_id=self.execution_id,
            node_id=rt.id,
            attempt=attempt,
            task=task_spec,
            inputs=inputs,
            idempotency_key=key,
            item_index=item_index,
            timeout_s=definition.timeout_s,
        )
        ctx = AttemptContext(
            loop=self._loop,
            execution_id=self.execution_id,
            node_id=rt.id,
            attempt=attempt,
            item_index=item_index,
            idempotency_key=key,
            emit_sink=self._on_emit,
            log_sink=self._on_log,
        )
        self._running += 1
        task = self._loop.create_task(
            self._attempt(rt, request, ctx), name=f"whenflow:{rt.id}#{attempt}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _attempt(self, rt: NodeRuntime, request: TaskRequest, ctx: AttemptContext) -> None:
        timeout = request.timeout_s
        outcome: TaskResult | BaseException
        try:
            if timeout is not None:
                async with asyncio.timeout(timeout):
                    outcome = await self._runner.run(request, ctx)
            else:
                outcome = await self._runner.run(request, ctx)
        except asyncio.CancelledError:
            if self._is_current(rt, request.attempt, request.item_index):
                raise
            return
        except TimeoutError:
            outcome = TaskTimeout(rt.id, timeout or 0.0)
        except Exception as exc:
            outcome = exc
        self._unit(self._attempt_done, rt, request.attempt, request.item_index, outcome)

    def _is_current(self, rt: NodeRuntime, attempt: int, item_index: int | None) -> bool:
        if rt.state is not NodeState.RUNNING:
            return False
        if item_index is None:
            return rt.attempt == attempt and rt.foreach is None
        run = rt.foreach
        return (
            run is not None
            and run.attempts.get(item_index) == attempt
            and item_index in run.running
        )

    def _attempt_done(
        self,
        rt: NodeRuntime,
        attempt: int,
        item_index: int | None,
        outcome: TaskResult | BaseException,
    ) -> None:
        if not self._is_current(rt, attempt, item_index):
            return  # a stale result of a cancelled or superseded attempt: fenced off
        self._running -= 1
        if item_index is not None:
            item_done(self, rt, item_index, attempt, outcome)
            return
        rt.task = None
        if isinstance(outcome, TaskResult):
            try:
                values, variables = self._accept_outputs(
                    rt, outcome.outputs, f"{self.execution_id}/{rt.id}"
                )
            except OutputError as exc:
                outcome = exc
            else:
                self._records.extend(VariableWritten(self.execution_id, v) for v in variables)
                self.pool.publish(rt.id, values)
                self._attempt_row(rt.id, NO_ITEM, attempt, NodeState.COMPLETED)
                rt.error = None
                self._terminal(rt, NodeState.COMPLETED, {"attempt": attempt})
                return
        self._attempt_failed(rt, attempt, outcome)

    def _accept_outputs(
        self, rt: NodeRuntime, outputs: Mapping[str, Any], key_prefix: str
    ) -> tuple[dict[str, Any], list[Any]]:
        values, variables = self.pool.store_outputs(
            rt.id, outputs, key_prefix=key_prefix, at=self._clock()
        )
        signature = rt.program.signature
        if signature is not None:
            for name, spec in signature.outputs.items():
                if name in values and not fits(values[name], spec.type):
                    raise OutputError(
                        f"node {rt.id!r}, output {name!r}: declared {spec.type} but the task "
                        f"returned {type_name(values[name])}"
                    )
        return values, variables

    def _attempt_failed(self, rt: NodeRuntime, attempt: int, error: BaseException) -> None:
        error_type = type(error).__name__
        message = str(error) or error_type
        self._attempt_row(rt.id, NO_ITEM, attempt, NodeState.FAILED, error_type, message)
        policy = rt.program.definition.retry
        if attempt - rt.lost_attempts < policy.max_attempts and policy.retries(error_type):
            delay = policy.delay_after(attempt - rt.lost_attempts)
            self._move(rt, NodeState.RETRYING)
            rt.error = message
            self._node_row(rt)
            self._publish(
                f"{rt.id}.retrying",
                rt.id,
                {"attempt": attempt, "delay": delay, "error_type": error_type, "message": message},
            )
            rt.retry_timer = self._call_later(delay, self._retry_due, rt)
            return
        self._fail(rt, error_type, message)

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

    def _retry_due(self, rt: NodeRuntime) -> None:
        rt.retry_timer = None
        if rt.state is NodeState.RETRYING:
            rt.queued = True
            self._ready.append((rt.id, NO_ITEM))

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
            self._end_all(ExecutionStatus.FAILED, f"failFast: node {rt.id!r} failed")

    def _skip(self, rt: NodeRuntime, reason: str) -> None:
        rt.reason = reason
        self._terminal(rt, NodeState.SKIPPED, {"reason": reason})

    def _cancel_work(self, rt: NodeRuntime) -> None:
        """Cancel whatever of this node is running or scheduled."""
        if rt.task is not None:
            rt.task.cancel()
            rt.task = None
            self._running -= 1
        self._cancel_timer(rt.retry_timer)
        rt.retry_timer = None
        run = rt.foreach
        if run is not None:
            for task in run.running.values():
                task.cancel()
                self._running -= 1
            run.running.clear()
            for handle in run.retry_timers.values():
                self._cancel_timer(handle)
            run.retry_timers.clear()
        rt.queued = False
        if any(r[0] == rt.id for r in self._ready):
            self._ready = deque(r for r in self._ready if r[0] != rt.id)
        if rt.state is NodeState.WAITING:
            self._waiting_nodes -= 1

    def _stop_node(self, rt: NodeRuntime, reason: str) -> None:
        if rt.state is NodeState.RUNNING:
            self._attempt_row(rt.id, NO_ITEM, rt.attempt, NodeState.STOPPED, "Stopped", reason)
        self._cancel_work(rt)
        rt.reason = reason
        self._terminal(rt, NodeState.STOPPED, {"reason": reason})

    def _end_all(self, status: ExecutionStatus, reason: str) -> None:
        """Stop (stopWhen) or cancel (failFast, cancel) every node that has not finished."""
        self._ending = status
        target = NodeState.STOPPED if status is ExecutionStatus.STOPPED else NodeState.CANCELLED
        for rt in self.nodes.values():
            if rt.state.is_terminal:
                continue
            if rt.state is NodeState.RUNNING:
                self._attempt_row(rt.id, NO_ITEM, rt.attempt, target, target.value.title(), reason)
            self._cancel_work(rt)
            rt.reason = reason
            self._terminal(rt, target, {"reason": reason})

    def cancel(self, reason: str = "cancelled by request") -> None:
        """Cancel the execution: running tasks are cancelled, nothing new starts."""
        if self._loop is None:
            raise RuntimeError("the execution has not started")
        self._unit(self._cancel_handler, reason)

    def _cancel_handler(self, reason: str) -> None:
        if self._ending is None:
            self._end_all(ExecutionStatus.CANCELLED, reason)

    def post_external_event(self, name: str, payload: Mapping[str, Any] | None = None) -> None:
        """Publish `external.<name>` into this running execution."""
        self._unit(self._publish_only, f"external.{name}", "external", dict(payload or {}))

    def _within_expired(self, node_id: str) -> None:
        self.index.expire_external(node_id)

    def _on_emit(
        self, node_id: str, attempt: int, item: int, name: str, payload: Mapping[str, Any]
    ) -> None:
        rt = self.nodes[node_id]
        if not self._is_current(rt, attempt, None if item == NO_ITEM else item):
            return
        body = {**payload, "attempt": attempt}
        if item != NO_ITEM:
            body["index"] = item
        self._unit(self._publish_only, f"{node_id}.{name}", node_id, body)

    def _on_log(self, node_id: str, attempt: int, item: int, stream: str, message: str) -> None:
        self._store.append(
            [LogAppended(self.execution_id, node_id, attempt, item, stream, message, self._clock())]
        )

    # -------------------------------------------------------------- endings

    def _skip_one_unsatisfiable(self) -> bool:
        """Quiescence: nothing runs or is scheduled, so an undecided node can never start."""
        for rt in self.nodes.values():
            if rt.state is NodeState.PENDING and not rt.queued:
                if unknown_external([rt.start_tree]):
                    continue
                self._skip(
                    rt, "unsatisfiable: the execution is quiescent and startWhen is still undecided"
                )
                return True
        return False

    def _set_waiting(self) -> None:
        if self.status is not ExecutionStatus.WAITING:
            self.status = ExecutionStatus.WAITING
            self._records.append(ExecutionUpdated(self.execution_id, self.status, self._clock()))

    def _finish(self) -> None:
        status = self._ending or ExecutionStatus.COMPLETED
        failed = [
            rt.id
            for rt in self.nodes.values()
            if rt.state is NodeState.FAILED and not rt.program.definition.allow_failure
        ]
        if status is ExecutionStatus.COMPLETED and failed:
            status = ExecutionStatus.FAILED
            self.error = self.error or f"node(s) failed: {', '.join(failed)}"
        if status is ExecutionStatus.COMPLETED:
            try:
                self.outputs = {
                    k: None if contains_missing(v) else v
                    for k, v in render_value(self.program.outputs, self.pool.context).items()
                }
            except TemplateEvaluationError as exc:
                status = ExecutionStatus.FAILED
                self.error = f"pipeline outputs: {exc}"
        self.status = status
        for handle in self._within_handles:
            handle.cancel()
        now = self._clock()
        self._publish(
            f"pipeline.{status.value}", PIPELINE_SOURCE, {"error": self.error} if self.error else {}
        )
        self._records.append(
            ExecutionUpdated(self.execution_id, status, now, now, dict(self.outputs), self.error)
        )
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # ------------------------------------------------------------- forEach

    def _start_foreach(self, rt: NodeRuntime) -> None:
        start_foreach(self, rt)

    def _launch_item(self, rt: NodeRuntime, index: int) -> None:
        launch_item(self, rt, index)

    # helpers used by engine.foreach and engine.recovery
    def spawn_item(
        self,
        rt: NodeRuntime,
        attempt: int,
        index: int,
        inputs: Mapping[str, Any],
        config: Mapping[str, Any],
    ) -> asyncio.Task[None]:
        return self._spawn(rt, attempt, index, inputs, config)
