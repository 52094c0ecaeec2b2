"""Many executions in one server process, on its one loop (DESIGN.md §11).

`ExecutionHost` is what `whenflow server` runs executions with:

- every execution has its own dispatcher (`Orchestrator`) on the loop, all
  sharing one state store (one group-commit writer);
- the process has **one inbox reader**: every `inbox_poll_s` it reads the
  pending messages of all the executions it runs in one query and hands each
  to its dispatcher. Requests made through the API are stored in the inbox
  (durable first) and handed to the dispatcher at once, and the call returns
  after the store's flush barrier, so its outcome (applied or refused) is
  durable too;
- at start-up, and every lease renewal period after, it resumes the unfinished
  top-level executions it may own (`leases`: one whose owner died is taken over
  once its lease expires; one a live process runs is left to it);
- `close(grace_s)` is the graceful shutdown: nothing new starts, running
  attempts get `grace_s` seconds to finish, the rest stays resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from whenflow.domain.definitions import TaskDefinition
from whenflow.domain.errors import ExecutionOwned, RequestRefused, WhenflowError
from whenflow.domain.events import Event
from whenflow.domain.param_types import resolve_inputs
from whenflow.domain.records import MessageKind
from whenflow.domain.states import ExecutionStatus
from whenflow.dsl.program import PipelineProgram
from whenflow.engine.orchestrator import Orchestrator
from whenflow.engine.runtime import ExecutionResult
from whenflow.services.executions import ExecutionService
from whenflow.services.idempotent_starts import Started, start_once
from whenflow.services.status_feed import StatusChange, StatusFeed
from whenflow.services.views import EventView, event_view
from whenflow.storage import inbox, queries
from whenflow.storage.inbox import MessageState

TaskSource = Callable[[], Awaitable[Mapping[str, TaskDefinition]]]
DEFAULT_INBOX_POLL_S = 0.25
DEFAULT_GRACE_S = 30.0
# Executions per inbox query (bound parameters of one IN list).
INBOX_CHUNK = 500
# How long a stream waits for a change before it reads the store again (an
# execution another process runs has no in-process notification).
STREAM_POLL_S = 1.0
STREAM_PAGE = 1000  # events read at once by a stream
_log = logging.getLogger("whenflow.server")


class ServerClosing(RequestRefused):
    """The server is shutting down and starts nothing new; retry on its successor."""


class ExecutionHost:
    """The executions of one server process; open with `async with ExecutionHost(...)`."""

    def __init__(
        self,
        service: ExecutionService,
        *,
        inbox_poll_s: float = DEFAULT_INBOX_POLL_S,
        adopt_every_s: float | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        known_tasks: TaskSource | None = None,
    ) -> None:
        """`known_tasks` gives the registry's published `kind: Task` definitions, with
        which the pipelines of resumed executions resolve their `task: {ref: ...}`."""
        self._service = service
        self._known_tasks = known_tasks
        self._grace_s = grace_s
        self._engine = service.store.engine
        self._poll_s = inbox_poll_s
        self._adopt_s = adopt_every_s or service.store.lease.renew_s
        self._running: dict[str, Orchestrator] = {}
        self._children: dict[str, Orchestrator] = {}
        """Sub-pipeline executions of those, while they run (they are attempts of a node)."""
        self._follow: dict[str, asyncio.Task[None]] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._status_queues: set[asyncio.Queue[StatusChange | None]] = set()
        self._unresumable: set[str] = set()
        self._reserved: set[str] = set()
        self._key_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._background: list[asyncio.Task[None]] = []
        self.observers: list[Callable[[Orchestrator], None]] = []
        """Called with every execution this host starts, resumes or retries (metrics, traces)."""
        self.result_listeners: list[Callable[[ExecutionResult], None]] = []
        """Called with the result of every execution this host ran to its end."""
        self.closing = asyncio.Event()
        self.resumed_once = asyncio.Event()
        """Set once the start-up pass over unfinished executions is done."""

    @property
    def service(self) -> ExecutionService:
        return self._service

    @property
    def running(self) -> frozenset[str]:
        """Ids of the executions this process runs now."""
        return frozenset(self._running)

    def orchestrators(self) -> list[Orchestrator]:
        """The dispatchers of the top-level executions this process runs now (for `/stats`)."""
        return list(self._running.values())

    @property
    def running_attempts(self) -> int:
        """Task attempts running now in the executions of this process (for `/stats`)."""
        return sum(o.state.running for o in self._running.values())

    async def __aenter__(self) -> ExecutionHost:
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._read_inbox(), name="whenflow-server-inbox"),
            loop.create_task(self._adopt(), name="whenflow-server-adopt"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ starts

    async def start(
        self,
        program: PipelineProgram,
        inputs: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> Started:
        """Start an execution of `program`; returns once its creation is durable.

        With `idempotency_key`, the same key and `request` (the request body,
        compared by its canonical JSON) return the execution the first call
        started.

        Raises:
            InputError: an input is missing or of the wrong type (names it).
            IdempotencyConflict: the key was used with another request.
            ServerClosing: the server is shutting down.
        """
        if self.closing.is_set():
            raise ServerClosing("the server is shutting down and starts nothing new; retry")
        resolved = resolve_inputs(program.definition.inputs, inputs)
        if idempotency_key is None:
            return await self._start(program, resolved)
        return await start_once(
            self._engine,
            self._key_locks,
            f"pipeline:{program.definition.name}",
            idempotency_key,
            request or {},
            lambda: self._start(program, resolved),
            self._cancel_duplicate,
        )

    async def _cancel_duplicate(self, execution_id: str) -> None:
        reason = "another server started this Idempotency-Key first; that execution goes on"
        with contextlib.suppress(RequestRefused):  # it has ended already
            await self.request(execution_id, MessageKind.CANCEL, "", {"reason": reason})

    async def retry(self, execution_id: str) -> Started:
        """Start a new execution retrying an ended one (`engine/retries.py`): completed
        nodes keep their outputs, the others run again. Returns once it is durable.

        Raises:
            ExecutionNotFound: no such execution.
            RequestRefused: it has not ended, it completed, or it is a sub-pipeline's.
            ServerClosing: the server is shutting down.
        """
        if self.closing.is_set():
            raise ServerClosing("the server is shutting down and starts nothing new; retry")
        new_id = str(uuid.uuid4())
        tasks = await self._known_tasks() if self._known_tasks is not None else None
        self._reserved.add(new_id)  # durable before it runs: not the adopter's to resume
        try:
            orchestrator, snapshot = await self._service.prepare_retry(
                execution_id,
                new_id,
                on_event=self._listener(new_id),
                shared_inbox=True,
                known_tasks=tasks,
            )
        finally:
            self._reserved.discard(new_id)
        self._running[new_id] = self._watch_status(orchestrator)
        self._run(new_id, orchestrator.resume(snapshot))
        return Started(new_id, str(ExecutionStatus.RUNNING), True)

    async def _start(self, program: PipelineProgram, inputs: Mapping[str, Any]) -> Started:
        execution_id = str(uuid.uuid4())
        orchestrator = self._service.orchestrator(
            program,
            inputs,
            execution_id=execution_id,
            on_event=self._listener(execution_id),
            shared_inbox=True,
        )
        self._running[execution_id] = self._watch_status(orchestrator)
        try:
            await orchestrator.start()
        except BaseException:
            self._running.pop(execution_id, None)
            raise
        self._run(execution_id, orchestrator.wait())
        status = str(orchestrator.status)
        await self._service.store.flush()  # the status returned is durable
        return Started(execution_id, status, True)

    def _run(self, execution_id: str, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(
            self._follow_to_end(execution_id, work), name=f"whenflow-execution:{execution_id}"
        )
        self._follow[execution_id] = task

    async def _follow_to_end(self, execution_id: str, work: Any) -> None:
        orchestrator = self._running.get(execution_id)
        try:
            result: ExecutionResult = await work
            await self._service.collect_garbage(result)
            if orchestrator is not None:
                self._service.notified(orchestrator.program, result)
            for listen in self.result_listeners:
                listen(result)
        except asyncio.CancelledError:
            raise
        except WhenflowError as exc:
            _log.error("execution %s stopped in this process: %s", execution_id, exc)
        except Exception:
            _log.exception("execution %s stopped in this process", execution_id)
        finally:
            self._running.pop(execution_id, None)
            self._follow.pop(execution_id, None)
            self._notify(execution_id)

    def _listener(self, execution_id: str) -> Any:
        def on_event(event: Event) -> None:
            self._notify(execution_id)

        return on_event

    def _adopt_child(self, child: Orchestrator) -> None:
        """A sub-pipeline execution started: it gets its requests from the one reader."""
        self._children[child.execution_id] = child
        child.add_listener(self._listener(child.execution_id))
        if self.closing.is_set():
            child.hold()

    def _hosted(self, execution_id: str) -> Orchestrator | None:
        """The dispatcher of an execution this process runs, top-level or child."""
        found = self._running.get(execution_id) or self._children.get(execution_id)
        if found is not None and found.state.done is not None and found.state.done.done():
            self._children.pop(execution_id, None)
            return None
        return found

    def _watch_status(self, orchestrator: Orchestrator) -> Orchestrator:
        definition = orchestrator.program.definition

        def on_status(status: ExecutionStatus) -> None:
            if not self._status_queues:
                return
            change = StatusChange(
                orchestrator.execution_id,
                definition.name,
                definition.version,
                str(status),
                time.time(),
            )
            for queue in list(self._status_queues):
                try:
                    queue.put_nowait(change)
                except asyncio.QueueFull:  # a client that does not read: its stream ends
                    self._status_queues.discard(queue)

        orchestrator.status_listeners.append(on_status)
        orchestrator.state.on_child = self._adopt_child
        for observe in self.observers:
            observe(orchestrator)
        return orchestrator

    def _notify(self, execution_id: str) -> None:
        for changed in self._watchers.get(execution_id, ()):
            changed.set()

    # ---------------------------------------------------------------- requests

    async def request(
        self,
        execution_id: str,
        kind: MessageKind,
        target: str = "",
        payload: Mapping[str, Any] | None = None,
        *,
        wait_s: float = 2.0,
    ) -> MessageState:
        """A decision, an external event, a cancel or a node stop, applied durably.

        The request is checked, stored in the inbox, and, when this process
        runs the execution, applied at once; returns after the store's flush
        barrier with its outcome. An execution another process runs applies it
        at that process's next inbox read (waited for up to `wait_s`).

        Raises:
            ExecutionNotFound, NodeNotFound, RequestRefused: as `ExecutionService.check_request`.
        """
        service = self._service
        if self._hosted(execution_id) is not None:
            await service.store.flush()  # the checks read what the dispatcher did so far
        if kind in (MessageKind.STOP, MessageKind.APPROVE, MessageKind.REJECT):
            await service.require_node(execution_id, target)  # 404 before "it has ended"
        await service.check_request(execution_id, kind, target, force=True)
        message = await service.post(execution_id, kind, target, payload)
        orchestrator = self._hosted(execution_id)
        if orchestrator is not None and orchestrator.live:
            orchestrator.deliver(message)
            await service.store.flush()
        else:
            await self._wait_applied(message.message_id, wait_s)
        state = await inbox.state(self._engine, message.message_id)
        assert state is not None
        if not state.applied:
            status = await queries.get_status(self._engine, execution_id)
            if status.is_terminal:  # it ended between the checks and the post
                reason = f"the execution ended ({status}) before this request was applied"
                await inbox.refuse_pending(self._engine, execution_id, reason, time.time())
                state = await inbox.state(self._engine, message.message_id)
                assert state is not None
        return state

    async def _wait_applied(self, message_id: int, wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            state = await inbox.state(self._engine, message_id)
            if state is not None and state.applied:
                return
            await asyncio.sleep(min(self._poll_s, max(0.0, deadline - loop.time())))

    # ----------------------------------------------------------------- streams

    @contextlib.contextmanager
    def _watch(self, execution_id: str) -> Iterator[asyncio.Event]:
        changed = asyncio.Event()
        self._watchers.setdefault(execution_id, set()).add(changed)
        try:
            yield changed
        finally:
            watchers = self._watchers.get(execution_id)
            if watchers is not None:
                watchers.discard(changed)
                if not watchers:
                    del self._watchers[execution_id]

    async def follow_events(
        self, execution_id: str, since: int = 0
    ) -> AsyncGenerator[EventView, None]:
        """Durable events with `seq > since`, then each new one, until the execution ends
        (or the server closes). Raises ExecutionNotFound before the first event."""
        await queries.get_status(self._engine, execution_id)
        with self._watch(execution_id) as changed:
            while True:
                changed.clear()
                status = await queries.get_status(self._engine, execution_id)
                while True:
                    page = await queries.get_events(self._engine, execution_id, since, STREAM_PAGE)
                    for event in page:
                        since = event.seq
                        yield event_view(event)
                    if len(page) < STREAM_PAGE:
                        break
                if status.is_terminal or self.closing.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STREAM_POLL_S):
                        await changed.wait()
                if self._hosted(execution_id) is not None:
                    await self._service.store.flush()  # what woke us is durable now

    def status_changes(self) -> StatusFeed:
        """Status changes of every execution this process runs, from this call on, until
        the server closes (or the reader falls too far behind, `status_feed`);
        `close()` the feed when done."""
        return StatusFeed(self._status_queues)

    # ------------------------------------------------------- the one inbox reader

    async def _read_inbox(self) -> None:
        while not self.closing.is_set():
            for child_id in list(self._children):
                self._hosted(child_id)  # forgets the children that ended
            hosted = [*self._running.items(), *self._children.items()]
            live = [eid for eid, o in hosted if o.live]
            messages = []
            try:
                for first in range(0, len(live), INBOX_CHUNK):
                    chunk = live[first : first + INBOX_CHUNK]
                    messages.extend(await inbox.pending_many(self._engine, chunk))
            except Exception as exc:  # a driver hiccup: the messages stay stored
                _log.warning("could not read the inbox: %s", exc)
            for message in messages:
                orchestrator = self._hosted(message.execution_id)
                if orchestrator is not None and orchestrator.live:
                    orchestrator.deliver(message)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self.closing.wait()

    # ---------------------------------------------------- resuming at start-up

    async def _adopt(self) -> None:
        while not self.closing.is_set():
            try:
                await self._adopt_once()
            except Exception as exc:  # the database is away: try again at the next pass
                _log.warning("could not look for unfinished executions: %s", exc)
            self.resumed_once.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._adopt_s):
                    await self.closing.wait()

    async def _adopt_once(self) -> None:
        for execution_id in await queries.unfinished_roots(self._engine):
            if self.closing.is_set():
                return
            await self.adopt(execution_id)

    async def adopt(self, execution_id: str) -> bool:
        """Run an unfinished execution stored in the database (created by another path,
        such as a schedule's fire, or left by a dead process) as one of this host's.

        Returns False when it is not run here: this process runs it already, it
        ended, a live process owns it, the server is closing, or it cannot load
        (logged; it stays unfinished for the next server).
        """
        if self.closing.is_set() or self._taken(execution_id):
            return False
        try:
            tasks = await self._known_tasks() if self._known_tasks is not None else None
            claimed = await self._service.claim(
                execution_id,
                on_event=self._listener(execution_id),
                shared_inbox=True,
                known_tasks=tasks,
            )
        except ExecutionOwned:
            return False  # a live process runs it; taken over if its lease expires
        except WhenflowError as exc:
            self._unresumable.add(execution_id)
            _log.error("cannot resume execution %s: %s", execution_id, exc)
            return False
        if isinstance(claimed, ExecutionResult) or self._taken(execution_id):
            return False  # ended, or this process took it up while it was claimed
        orchestrator, snapshot = claimed
        self._running[execution_id] = self._watch_status(orchestrator)
        _log.info("running execution %s", execution_id)
        self._run(execution_id, orchestrator.resume(snapshot))
        return True

    def _taken(self, execution_id: str) -> bool:
        return (
            execution_id in self._running
            or execution_id in self._reserved
            or execution_id in self._unresumable
        )

    # ---------------------------------------------------------------- shutdown

    def stop_accepting(self) -> None:
        """Start nothing new (no execution, no attempt) and end the streams: a stopping
        server's first step. Running attempts go on until `close`."""
        self.closing.set()
        for orchestrator in [*self._running.values(), *self._children.values()]:
            orchestrator.hold()
        for queue in list(self._status_queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._status_queues.clear()
        for execution_id in list(self._watchers):
            self._notify(execution_id)

    async def close(self, grace_s: float | None = None) -> None:
        """Stop accepting, let running attempts finish within `grace_s` (default: the
        host's), halt the rest.

        Halted executions stay unfinished in the store: the next server (or
        `whenflow resume`) continues them.
        """
        self.stop_accepting()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        grace = self._grace_s if grace_s is None else grace_s
        running = list(self._running.values())
        if running:
            _log.info("stopping: running attempts of %d executions get %gs", len(running), grace)
        await asyncio.gather(*(o.drain(grace) for o in running), return_exceptions=True)
        follow = list(self._follow.values())
        for task in follow:
            task.cancel()
        await asyncio.gather(*follow, return_exceptions=True)
