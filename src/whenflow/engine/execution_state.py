"""One execution's state, as the dispatcher owns it, and the primitive moves on it.

`ExecutionState` is the small internal API the parts of the dispatcher share
(`orchestrator`, `attempts`, `foreach`, `endings`, `recovery`): it holds the
nodes, the trigger index, the counters and the rows of the current unit of
work, and offers the moves every rule is made of — `publish` an event, `move`
a node, end it with `terminal`, write a `node_row` or `attempt_row`, queue it
(`enqueue`), schedule a handler (`call_later`). Policy (when a node starts,
fails, retries or is skipped) lives in those modules, never here.

Everything runs on the dispatcher's loop inside one unit of work
(`run_unit`), which hands `records` to the store in one append when it ends.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from whenflow.domain.events import PIPELINE_SOURCE, Event
from whenflow.domain.records import (
    AttemptRecorded,
    EventAppended,
    LogAppended,
    NodeUpdated,
    Record,
)
from whenflow.domain.states import TERMINAL_EVENT_SUFFIX, ExecutionStatus, NodeState
from whenflow.dsl.program import PipelineProgram
from whenflow.dsl.templates import Missing, TemplateEvaluationError, compile_condition
from whenflow.engine.attempt_context import DEFAULT_TASK_LOG_LIMIT
from whenflow.engine.children import ChildExecution, ChildFactory
from whenflow.engine.ports import SecretStore, StateStore, TaskRunner
from whenflow.engine.runtime import NO_ITEM, NodeRuntime
from whenflow.engine.secret_masking import SecretMask
from whenflow.engine.transitions import transition
from whenflow.engine.trigger_eval import ConditionLeaf, TreeKind, TriggerTree
from whenflow.engine.trigger_index import TriggerIndex
from whenflow.engine.variable_pool import VariablePool

EventListener = Callable[[Event], None]
LogListener = Callable[[LogAppended], None]
UnitRunner = Callable[..., None]
# Task attempts running at once when a pipeline sets no `concurrency`. Unbounded,
# a 10,000-wide fan-out of sync tasks keeps 10,000 attempts alive against a
# 6-thread pool and runs measurably superlinear; Airflow bounds it by default too.
DEFAULT_CONCURRENCY = 64
_ids = random.Random()


def _event_id() -> str:
    """A random 128-bit id: unique, not secret, so no system call per event."""
    return f"{_ids.getrandbits(128):032x}"


def _no_children(
    program: PipelineProgram, *, inputs: Mapping[str, Any], execution_id: str | None
) -> ChildExecution:
    raise RuntimeError("this execution state has no dispatcher to start child executions")


class ExecutionState:
    """The mutable state of one execution and the moves the dispatcher makes on it."""

    def __init__(
        self,
        program: PipelineProgram,
        *,
        execution_id: str,
        pool: VariablePool,
        store: StateStore,
        runner: TaskRunner,
        clock: Callable[[], float],
        run_unit: UnitRunner,
        secrets: SecretStore | None = None,
        mask: SecretMask | None = None,
    ) -> None:
        self.program = program
        self.definition = program.definition
        self.execution_id = execution_id
        self.pool = pool
        self.store = store
        self.runner = runner
        self.clock = clock
        self.secrets = secrets
        self.mask = mask if mask is not None else SecretMask()
        """The secret values this execution revealed; masked in everything it hands out."""
        pool.conceal = self._conceal
        self.run_unit = run_unit
        """Runs a handler as one unit of work; what timers and task reports go through."""
        self.start_child: ChildFactory = _no_children
        """Builds a child execution's dispatcher (`pipeline` tasks); the orchestrator sets it."""
        self.listeners: list[EventListener] = []
        self.log_listeners: list[LogListener] = []
        """Called with each task log line as stored (masked, within the cap)."""
        self.task_log_limit: int | None = DEFAULT_TASK_LOG_LIMIT
        """Bytes one attempt may log; None for no limit."""
        self.started_at = pool.system["started_at"]

        self.events: list[Event] = []
        self.seq = 0
        self.records: list[Record] = []
        """Rows of the current unit of work; the unit appends them to the store."""
        self.status = ExecutionStatus.RUNNING
        self.error: str | None = None
        self.outputs: dict[str, Any] = {}
        self.ending: ExecutionStatus | None = None
        """Set once the execution is being stopped, cancelled or failed fast."""
        self.ending_reason: str | None = None
        """Why it is ending early (`ending.reason` of the finally nodes)."""

        self.decisions: deque[tuple[TriggerTree, bool]] = deque()
        self.condition_errors: deque[tuple[TriggerTree, str]] = deque()
        self.ready: deque[tuple[str, int]] = deque()
        self.admission_held = False
        """While set, queued attempts wait: resume applies pending requests first."""
        self.halting = False
        """Set when this process stops its work without ending the execution (Ctrl-C,
        SIGTERM): a running sub-pipeline is halted too, not cancelled."""
        self.running = 0
        self.timers = 0
        self.waiting_nodes = 0
        self.non_terminal = len(program.nodes)
        self.attempt_starts: dict[tuple[str, int, int], float] = {}
        self.quiescence_cursor = 0  # nodes before it were not undecided at the last skip
        self.inbox_seen: set[int] = set()
        self.condition_context: Mapping[str, Any] = pool.context
        """What trigger conditions are evaluated over (the helpers may differ)."""
        self.read_inbox: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.on_child: Callable[[Any], None] | None = None
        """Called with the dispatcher of each sub-pipeline execution this one starts
        (and passed on to it): a server hands it its requests from its one inbox reader."""
        """Reads and applies the inbox now; None when this execution reads no inbox."""
        """Inbox messages applied by this process (their InboxApplied may not be durable yet)."""

        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.within_handles: list[asyncio.TimerHandle] = []

        self.index = TriggerIndex(self.definition.node_ids, self.evaluate_condition)
        self.nodes: dict[str, NodeRuntime] = {}
        for node in program.nodes:
            start = self._tree(node.id, "start", node.start)
            stop = self._tree(node.id, "stop", node.stop) if node.stop is not None else None
            self.nodes[node.id] = NodeRuntime(node, start, stop)
        self.node_list = list(self.nodes.values())
        self.finally_nodes = [rt for rt in self.node_list if rt.program.definition.is_finally]
        self.finally_begun = False
        """Set once `pipeline.ending` is published and the finally nodes may start (cleanup)."""
        self.finally_bound: str | None = None
        """What bounded the finally nodes by `finallyGrace` (a cancel, the timeout), if anything."""
        self.pipeline_stop = (
            self._tree(PIPELINE_SOURCE, "pipeline_stop", program.stop) if program.stop else None
        )
        # Trees made only of literals are decided when built and never call back.
        self.predecided = [tree for tree in self.trees() if tree.value is not None]

    # ------------------------------------------------------------ triggers

    def _tree(self, owner: str, kind: TreeKind, expr: Any) -> TriggerTree:
        return TriggerTree(owner, kind, expr, compile_condition, self._on_decided)

    def trees(self) -> list[TriggerTree]:
        """Every trigger tree: each node's start and stop, and the pipeline's stop."""
        found = [
            tree
            for rt in self.node_list
            # A finally node's start is decided when the ending comes (cleanup), not indexed.
            for tree in (None if rt.program.definition.is_finally else rt.start_tree, rt.stop_tree)
            if tree is not None
        ]
        if self.pipeline_stop is not None:
            found.append(self.pipeline_stop)
        return found

    def _conceal(self, value: Any) -> Any:
        return self.mask.value(value) if self.mask else value

    def _on_decided(self, tree: TriggerTree, value: bool) -> None:
        self.decisions.append((tree, value))

    def evaluate_condition(self, leaf: ConditionLeaf, early: bool = False) -> None:
        """Settle a condition leaf now, or queue its error for the dispatcher.

        `early` (its source still runs): settle only a true value, and leave
        errors to the final evaluation.
        """
        try:
            value = leaf.template.evaluate(self.condition_context)
        except TemplateEvaluationError as exc:
            if early:
                return
            leaf.error = str(exc)
            self.condition_errors.append(
                (leaf.tree, f"{{{{ {leaf.template.info.source} }}}}: {exc.reason}")
            )
            return
        truth = bool(value) and not isinstance(value, Missing)
        if truth or not early:
            leaf.settle(truth)

    def register_trees(self) -> None:
        """Index every trigger tree, and arm the `within:` deadlines of external waits."""

        def terminal(node_id: str) -> bool:
            return self.nodes[node_id].state.is_terminal

        for tree in self.trees():
            self.index.register(tree, terminal)
        assert self.loop is not None
        for rt in self.node_list:
            within = rt.program.definition.within_s
            if within is not None and self.index.external_leaves.get(rt.id):
                delay = max(0.0, self.started_at + within - self.clock())
                handle = self.loop.call_later(
                    delay, self.run_unit, self.index.expire_external, rt.id
                )
                self.within_handles.append(handle)

    # --------------------------------------------------------- events, rows

    def publish(
        self, event_type: str, source: str, payload: Mapping[str, Any] | None = None
    ) -> Event:
        """Append an event to the log, record it, and let the trigger index see it."""
        if payload and self.mask:
            payload = self.mask.value(dict(payload))
        self.seq += 1
        event = Event(
            event_id=_event_id(),
            execution_id=self.execution_id,
            seq=self.seq,
            event_type=event_type,
            source=source,
            timestamp=self.clock(),
            payload=payload or {},
        )
        self.events.append(event)
        self.records.append(EventAppended(event))
        self.index.on_event(event)
        for listener in self.listeners:
            listener(event)
        return event

    def node_row(self, rt: NodeRuntime) -> None:
        self.records.append(
            NodeUpdated(
                execution_id=self.execution_id,
                node_id=rt.id,
                state=rt.state,
                attempts=rt.attempt,
                updated_at=self.clock(),
                started_at=rt.started_at,
                finished_at=rt.finished_at,
                error=rt.error,
                reason=rt.reason,
            )
        )

    def attempt_row(
        self,
        node_id: str,
        item_index: int,
        attempt: int,
        status: NodeState,
        error_type: str | None = None,
        message: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """Upsert one attempt row; an open row remembers its start for its final row."""
        now = self.clock()
        key = (node_id, item_index, attempt)
        is_open = status is NodeState.RUNNING or status is NodeState.WAITING
        if is_open:
            self.attempt_starts[key] = started_at = now if started_at is None else started_at
        elif started_at is None:
            started_at = self.attempt_starts.pop(key, now)
        self.records.append(
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
                finished_at=None if is_open else now,
                error_type=error_type,
                error_message=message,
            )
        )

    def idempotency_key(self, node_id: str, item_index: int | None) -> str:
        """`<execution>/<node>[/<index>]`, the same for every attempt (DESIGN.md §7)."""
        key = f"{self.execution_id}/{node_id}"
        return key if item_index is None else f"{key}/{item_index}"

    # ------------------------------------------------------------ node moves

    def move(self, rt: NodeRuntime, target: NodeState) -> None:
        """Change a node's state through the transition table (raises on a bad move)."""
        transition(rt.id, rt.state, target)
        if target is NodeState.WAITING:
            self.waiting_nodes += 1
        elif rt.state is NodeState.WAITING:
            self.waiting_nodes -= 1
        rt.state = target
        if target.is_terminal:
            rt.finished_at = self.clock()
            self.non_terminal -= 1

    def terminal(self, rt: NodeRuntime, target: NodeState, payload: Mapping[str, Any]) -> None:
        """Move to a terminal state, write its row and event, and count down its waiters."""
        self.move(rt, target)
        self.node_row(rt)
        self.publish(f"{rt.id}.{TERMINAL_EVENT_SUFFIX[target]}", rt.id, payload)
        self.index.on_terminal(rt.id)

    def enqueue(self, node_id: str, item_index: int = NO_ITEM) -> None:
        """Queue an attempt for admission under the execution's concurrency."""
        self.ready.append((node_id, item_index))

    def has_slot(self) -> bool:
        return self.running < (self.definition.concurrency or DEFAULT_CONCURRENCY)

    # ------------------------------------------------------- loop resources

    def call_later(
        self, delay: float, handler: Callable[..., None], *args: Any
    ) -> asyncio.TimerHandle:
        """Run `handler` as a unit of work after `delay` seconds; counted until it fires."""
        assert self.loop is not None
        self.timers += 1

        def fire() -> None:
            self.timers -= 1
            self.run_unit(handler, *args)

        return self.loop.call_later(delay, fire)

    def cancel_timer(self, handle: asyncio.TimerHandle | None) -> None:
        if handle is not None and not handle.cancelled():
            handle.cancel()
            self.timers -= 1

    def start_task(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A watched asyncio task doing one attempt's work; counted as running."""
        assert self.loop is not None
        self.running += 1
        task = self.loop.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
