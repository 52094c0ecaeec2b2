"""The durable state store: an ordered write buffer and one group-commit writer.

`SqlStateStore` implements the engine's `StateStore` port (DESIGN.md §7):

- `append(records)` is synchronous and never touches the database: it extends
  an in-memory buffer, advances the append position and wakes the writer.
- One writer task takes *everything* in the buffer, commits it in one
  transaction (`write_batch.plan_batch`: a few Core `executemany` statements),
  and releases the flush waiters whose position is now committed. Records
  appended while a commit runs form the next batch, so the number of commits
  follows the database's speed, not the number of records.
- `flush()` is a barrier for the position at the time of the call.
- A failed commit is fatal for the store: the error is kept, every pending and
  later `flush()` and every later `append()` raise `StoreError` from it, the
  `failure()` future is set with it (the dispatcher ends the run), and nothing
  is silently dropped. Durable is then the prefix before that batch. A commit
  that does not return within `commit_timeout_s` fails the same way: a store
  fault never hangs the process.
- Each execution has one owner (`leases`): the store inserts the owner row in
  the commit that creates an execution, `claim()` takes one over, every commit
  first renews (and so fences) the leases it holds, an idle store renews them
  every `renew_s`, and the commit that ends an execution deletes its row;
  `close()` releases the rest.

Records are committed in append order, batch by batch, so what is durable is
always a prefix of what was appended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.errors import OwnershipLost, StoreError
from whenflow.domain.records import ExecutionSnapshot, InboxMessage, Record
from whenflow.domain.states import ExecutionStatus
from whenflow.storage import inbox, leases, queries
from whenflow.storage.database import Durability, sqlite_configurer
from whenflow.storage.leases import LeaseLost, LeasePolicy, LeaseWrites, Owner
from whenflow.storage.sqlite_writer import SqliteBatchWriter, file_url
from whenflow.storage.write_batch import BatchStatements, Step, plan_batch

_MAX_CAUSE_CHARS = 600
# Commits at most this often while records stream in (a group-commit delay, as
# PostgreSQL's commit_delay): a chain of fast nodes then shares commits instead
# of paying one per node. A quiet store commits at once, and `flush()` never waits.
DEFAULT_COMMIT_INTERVAL_S = 0.002
# The most records one transaction takes: a backlog (a wide fan-out of instant
# tasks) commits in bounded chunks, which keeps the WAL and the lock hold short.
# A chunk ends at the end of an `append` (one unit of work: a node's state, its
# variables, its events, an inbox message marked applied), never inside one, so
# a unit is always durable whole; a single larger unit is one chunk.
MAX_BATCH_RECORDS = 10_000
# A commit that takes longer fails the store (a lock held for ever, a stalled
# disk or network): the run ends with an error instead of hanging.
DEFAULT_COMMIT_TIMEOUT_S = 30.0
_TERMINAL = frozenset(s.value for s in ExecutionStatus if s.is_terminal)
_log = logging.getLogger("whenflow.storage")


class SqlStateStore:
    """Group-commit state store over SQLite or PostgreSQL (SQLAlchemy Core, async).

    Use it as `async with SqlStateStore(engine) as store:` or call `start()`
    and `close()` yourself; `open_state_store(url)` also makes the engine and
    migrates the schema.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        owns_engine: bool = False,
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
        commit_timeout_s: float = DEFAULT_COMMIT_TIMEOUT_S,
        owner: Owner | None = None,
        lease: LeasePolicy | None = None,
        durability: Durability = Durability.PROCESS,
    ) -> None:
        """Args:
        engine: where to write; its schema must be at head (`database.upgrade`).
        owns_engine: dispose the engine in `close()`.
        commit_interval_s: the least time between two commits unless someone
            waits in `flush()`; 0 commits as soon as the last commit ends.
        commit_timeout_s: a commit that takes longer fails the store.
        owner: who this store writes as (default: this process, a new random part).
        lease: how long the leases of its executions last and how often they
            are renewed.
        durability: what a commit survives on SQLite (`Durability`); the
            engine's own connections should be made with the same.
        """
        self._engine = engine
        self._owns_engine = owns_engine
        self._statements = BatchStatements(engine.dialect.name)
        self._buffer: list[Record] = []
        self._appended = 0  # records appended so far: the append position
        self._unit_ends: deque[int] = deque()  # append positions where an append() ended
        self._committed = 0  # records durable so far: the committed position
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._interval = commit_interval_s
        self._last_commit = float("-inf")
        self._pacing: asyncio.TimerHandle | None = None
        self.commits = 0  # batches committed; for probes and tests
        self._timeout = commit_timeout_s
        self._timed_out = False
        self.owner = owner or Owner.of_this_process()
        self.lease = lease or LeasePolicy()
        self._held: set[str] = set()  # executions whose lease this store holds
        self._renewed = float("-inf")  # loop time of the last renewal
        # Wall time before which no other process can have taken over a held
        # execution: the earliest expiry this store wrote, less a margin.
        self._safe_until = float("-inf")
        self._heartbeat: asyncio.TimerHandle | None = None
        self._failure: asyncio.Future[StoreError] | None = None
        sync_url = file_url(engine.url)
        self._sqlite_writer = (
            SqliteBatchWriter(sync_url, sqlite_configurer(durability))
            if sync_url is not None
            else None
        )

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def writer_pragma(self, name: str) -> Any:
        """`PRAGMA name` on the SQLite writer's connection, None on other databases."""
        if self._sqlite_writer is None:
            return None
        return await self._sqlite_writer.pragma(name)

    @property
    def pending(self) -> int:
        """Records appended but not yet committed."""
        return self._appended - self._committed

    @property
    def held(self) -> frozenset[str]:
        """Executions whose lease this store holds."""
        return frozenset(self._held)

    async def start(self) -> None:
        """Start the writer task; idempotent."""
        if self._closed:
            raise StoreError("the state store is closed")
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="whenflow-state-writer")
            self._writer.add_done_callback(self._writer_done)
            self._beat()

    def failure(self) -> asyncio.Future[StoreError]:
        """Set with the store's error once a commit fails; pending until then."""
        if self._failure is None:
            self._failure = asyncio.get_running_loop().create_future()
            if self._error is not None:
                self._failure.set_result(self._store_error())
        return self._failure

    async def claim(self, execution_id: str) -> None:
        """Own `execution_id` from now on (a takeover once another owner's lease expired).

        Raises:
            ExecutionOwned: another process holds a live lease on it.
            ExecutionNotFound: no such execution.
            StoreError: the store has failed, or the database cannot be written.
        """
        if self._error is not None:
            raise self._store_error()
        if execution_id in self._held:
            return
        now = time.time()
        try:
            async with asyncio.timeout(self._timeout):
                await leases.claim(self._engine, execution_id, self.owner, self.lease, now)
        except TimeoutError:
            raise StoreError(
                f"could not claim execution {execution_id} within {self._timeout:g}s: "
                "the database did not answer"
            ) from None
        except SQLAlchemyError as exc:
            raise StoreError(f"could not claim execution {execution_id}: {exc}") from exc
        if not self._held:
            self._safe_until = float("inf")
        self._held.add(execution_id)
        claimed_until = now + self.lease.lease_s - self.lease.renew_s
        self._safe_until = min(self._safe_until, claimed_until)
        # The next commit renews every held lease with this one (see `_lease_writes`).
        self._renewed = float("-inf")

    def append(self, records: Sequence[Record]) -> None:
        """Queue records for the next group commit; O(len(records)), never waits."""
        if self._error is not None:
            raise self._store_error()
        if self._closing:
            raise StoreError("the state store is closed; records appended after close() are lost")
        if not records:
            return
        self._buffer.extend(records)
        self._appended += len(records)
        self._unit_ends.append(self._appended)
        if self._pacing is None:
            self._wake.set()

    async def flush(self) -> None:
        """Return once everything appended before this call is committed.

        Raises:
            StoreError: a commit failed (now or earlier), or the store is not running.
        """
        if self._error is not None:
            raise self._store_error()
        target = self._appended
        if self._committed >= target:
            return
        if self._writer is None or self._writer.done():
            raise StoreError("the state store is not started; call `await store.start()`")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._wake.set()  # a waiter ends any pacing delay
        await future

    async def load_execution(self, execution_id: str) -> ExecutionSnapshot:
        """The committed state of one execution, after flushing this store's own appends.

        Raises:
            ExecutionNotFound: no execution with that id.
        """
        if self.pending and self._writer is not None:
            await self.flush()
        return await queries.get_execution(self._engine, execution_id)

    async def pending_messages(self, execution_id: str) -> list[InboxMessage]:
        """Inbox messages to this execution that no commit has marked applied yet."""
        return await inbox.pending(self._engine, execution_id)

    async def close(self) -> None:
        """Commit what is buffered, stop the writer, dispose an owned engine.

        Raises StoreError if a commit failed during the store's life.
        """
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        try:
            if self._writer is not None:
                await asyncio.shield(self._writer)
        finally:
            self._closed = True
            if self._heartbeat is not None:
                self._heartbeat.cancel()
            if self._sqlite_writer is not None:
                self._sqlite_writer.close(abandon=self._timed_out)
            if not self._timed_out:
                await self._release_all()
            if self._owns_engine:
                await self._engine.dispose()
        if self._error is not None:
            raise self._store_error()

    async def _release_all(self) -> None:
        """Give up the leases still held: an interrupted execution can be resumed at once.

        Best effort: a lease that cannot be released expires on its own.
        """
        held, self._held = self._held, set()
        try:
            async with asyncio.timeout(self._timeout):
                await leases.release(self._engine, held, self.owner)
        except Exception as exc:
            _log.warning("could not release the leases of %s: %s", ", ".join(held), exc)

    async def __aenter__(self) -> SqlStateStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.close()
        except StoreError:
            # Do not hide the exception already on its way out; it is usually the cause.
            if exc is None:
                raise

    def _beat(self) -> None:
        """Wake the writer every `renew_s`: an idle store renews its leases."""
        if self._closed or self._error is not None:
            return
        if self._held:
            self._wake.set()
        self._heartbeat = asyncio.get_running_loop().call_later(self.lease.renew_s, self._beat)

    def _renewal_due(self, now: float) -> bool:
        return bool(self._held) and now - self._renewed >= self.lease.renew_s

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._buffer:
                if self._closing:
                    return
                if self._renewal_due(loop.time()):
                    try:
                        await self._commit_timed([])
                    except Exception as exc:
                        await self._fail_from(exc)
                        return
                continue
            delay = self._last_commit + self._interval - loop.time()
            if delay > 0 and not self._waiters and not self._closing:
                if self._pacing is None:
                    self._pacing = loop.call_later(delay, self._end_pacing)
                continue
            if self._pacing is not None:
                self._pacing.cancel()
                self._pacing = None
            size = self._next_batch_size()
            if size == len(self._buffer):
                batch, self._buffer = self._buffer, []
            else:
                batch = self._buffer[:size]
                del self._buffer[:size]
            end = self._committed + len(batch)
            try:
                await self._commit_timed(batch)
            except Exception as exc:
                await self._fail_from(exc)
                return
            self._committed = end
            self._last_commit = loop.time()
            self.commits += 1
            self._release(end)
            # Records appended during the commit have set the event again.
            if self._buffer or self._closing:
                self._wake.set()

    def _next_batch_size(self) -> int:
        """Records of the next commit: whole units, at most MAX_BATCH_RECORDS unless
        the first unit alone is larger."""
        ends = self._unit_ends
        limit = self._committed + MAX_BATCH_RECORDS
        end = ends.popleft()
        while ends and ends[0] <= limit:
            end = ends.popleft()
        return end - self._committed

    def _end_pacing(self) -> None:
        self._pacing = None
        self._wake.set()

    async def _commit_timed(self, batch: list[Record]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._commit(batch)
        except TimeoutError:
            self._timed_out = True
            raise TimeoutError(
                f"a commit took longer than {self._timeout:g}s (the database or its disk "
                "does not answer; set WHENFLOW_COMMIT_TIMEOUT to wait longer)"
            ) from None

    async def _commit(self, batch: list[Record]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        steps = plan_batch(batch, self._statements)
        writes = self._lease_writes(steps, started)
        renewed = True
        if self._sqlite_writer is not None:
            renewed = await self._sqlite_writer.commit(steps, writes)
        else:
            async with self._engine.begin() as connection:
                if writes is not None:
                    await leases.apply_async(connection, writes, first=True)
                for step in steps:
                    await connection.execute(step.statement, step.mappings())
                if writes is not None:
                    await leases.apply_async(connection, writes, first=False)
        if writes is None:
            return
        if renewed or not writes.renew:  # every held lease now expires at expires_at
            self._renewed = started
            self._safe_until = writes.expires_at - self.lease.renew_s
        self._held.update(writes.take)
        self._held.difference_update(writes.drop)

    def _lease_writes(self, steps: list[Step], started: float) -> LeaseWrites | None:
        """The owner rows this batch creates and deletes, and the leases it renews."""
        statements = self._statements
        take: tuple[str, ...] = ()
        drop: tuple[str, ...] = ()
        for step in steps:
            if step.statement is statements.insert_execution:
                take = tuple(row[0] for row in step.rows)
            elif step.statement is statements.update_execution:
                drop = tuple(row[-1] for row in step.rows if row[0] in _TERMINAL)
        if not (self._held or take):
            return None
        now = time.time()
        return LeaseWrites(
            self.owner,
            now,
            now + self.lease.lease_s,
            tuple(self._held),
            take,
            drop,
            # A new execution (a sub-pipeline's child) renews the held ones with it: no
            # lease this store took may outlive those it held (a takeover of the parent
            # at its expiry must find its child expired too).
            renew_due=self._renewal_due(started) or bool(take),
            safe_until=self._safe_until,
        )

    async def _fail_from(self, exc: Exception) -> None:
        if isinstance(exc, LeaseLost):
            exc = await self._ownership_lost(exc)
        self._fail(exc)

    async def _ownership_lost(self, lost: LeaseLost) -> OwnershipLost:
        self._held.difference_update(lost.execution_ids)
        details = []
        for eid in lost.execution_ids:
            try:
                row = await leases.read_owner(self._engine, eid)
            except Exception:  # the description is best effort; the loss is certain
                row = None
            who = f"process {row.pid} on host {row.host!r}" if row else "another process"
            details.append(f"execution {eid} was taken over by {who}")
        return OwnershipLost(
            "; ".join(details) + ": this process stopped writing to it (its lease had "
            "expired: was this process suspended, or the database unreachable?)"
        )

    def _release(self, committed: int) -> None:
        waiters = self._waiters
        while waiters and waiters[0][0] <= committed:
            _, future = waiters.popleft()
            if not future.done():  # the flusher may have been cancelled
                future.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._buffer = []
        self._unit_ends.clear()
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(self._store_error())
        if self._failure is not None and not self._failure.done():
            self._failure.set_result(self._store_error())

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        # A writer that stops without an error while records wait (it was
        # cancelled, the loop is closing) must not leave flush() hanging.
        if self._error is None and (self._waiters or self._buffer):
            cancelled = task.cancelled()
            cause = task.exception() if not cancelled else None
            self._fail(cause or RuntimeError("the state-store writer was cancelled"))

    def _store_error(self) -> StoreError:
        if isinstance(self._error, OwnershipLost):
            error: StoreError = OwnershipLost(str(self._error))
            error.__cause__ = self._error
            return error
        cause = str(self._error)
        if len(cause) > _MAX_CAUSE_CHARS:
            cause = cause[:_MAX_CAUSE_CHARS] + " …"
        error = StoreError(
            f"the state store could not commit ({type(self._error).__name__}: {cause}); "
            "records after the last successful flush are not durable"
        )
        error.__cause__ = self._error
        return error


@asynccontextmanager
async def open_state_store(
    url: str | None = None, *, migrate: bool = True
) -> AsyncIterator[SqlStateStore]:
    """Make an engine for `url` (default: the embedded SQLite), migrate it, run a store.

    The engine is disposed when the block ends; everything appended is
    committed first.
    """
    from whenflow.storage.database import make_engine, upgrade

    engine = make_engine(url)
    try:
        if migrate:
            await upgrade(engine)
    except BaseException:
        await engine.dispose()
        raise
    async with SqlStateStore(engine, owns_engine=True) as store:
        yield store
