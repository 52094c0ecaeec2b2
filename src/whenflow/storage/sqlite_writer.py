"""SQLite batches committed in one hop to a dedicated writer thread (DESIGN.md §7).

Through aiosqlite every statement of a batch and its commit are a separate
round trip to aiosqlite's thread (~7 per batch, ~0.1 ms each on a small VM),
and in a sequential chain each batch holds one node, so those hops were most of
a python task's overhead. Here the whole batch — planning, `executemany` of
the same SQLAlchemy Core statements, commit — runs in one call on one thread
with a synchronous connection to the same file. Reads and migrations keep
using the async engine; WAL lets them run beside this single writer.

Statements are compiled once per column list by SQLAlchemy's SQLite dialect
and handed to the sqlite3 connection's own `executemany` with the planned
tuples as they are (reordered only if the compiled parameter order differs):
the values are already str/int/float/None, SQLAlchemy's per-row parameter
processing was about half of the store's cost per node, and its per-statement
work another ~0.1 ms per commit. Driver errors are raised as SQLAlchemy's.

The thread is a daemon of its own, not a pool's: a commit that never returns
(a lock held forever, a stalled disk) is abandoned by the store after its
commit timeout, and must not keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from whenflow.storage.leases import (
    RENEW_SQLITE,
    LeaseLost,
    LeaseWrites,
    delete_statement,
    insert_statement,
    renew_rows,
)
from whenflow.storage.write_batch import Row, Step

# A statement for the driver: its SQL text, and how to reorder a planned row
# into the SQL's parameter order (None: the row is already in that order).
_DriverStatement = tuple[str, Callable[[Row], Row] | None]
# What the writer thread runs: driver SQL with tuples, or (SQL None) the Core
# statement with dicts.
_Prepared = tuple[Step, str | None, list[Any]]
_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


def file_url(url: URL) -> URL | None:
    """The synchronous URL of a file-backed SQLite database, or None."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):
        return None
    return url.set(drivername="sqlite")


class _DaemonThread:
    """One daemon thread running submitted calls in order."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put((future, fn, args))
        return future

    def stop(self) -> None:
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)


class SqliteBatchWriter:
    """Commits whole batches on its own thread; `commit` is awaited by the store's writer."""

    def __init__(self, url: URL, configure: Any) -> None:
        self._engine = sa.create_engine(url, poolclass=sa.pool.SingletonThreadPool)
        sa.event.listen(self._engine, "connect", configure)
        self._thread = _DaemonThread("whenflow-sqlite-writer")
        self._compiled: dict[tuple[int, tuple[str, ...]], _DriverStatement | None] = {}

    async def pragma(self, name: str) -> Any:
        """The value of `PRAGMA name` on the writer's own connection (for probes and tests)."""

        def read() -> Any:
            with self._engine.connect() as connection:
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

        return await asyncio.wrap_future(self._thread.submit(read))

    async def commit(self, steps: list[Step], lease: LeaseWrites | None = None) -> bool:
        """Commit `steps` (and the lease writes); True if the leases were renewed."""
        # Planned (JSON, tuples) on the loop; the thread then runs only the
        # driver's C-level executemany and commit, which release the GIL, so
        # it hardly competes with the threads running tasks.
        statements = [self._prepare(step) for step in steps]
        renewed: bool = await asyncio.wrap_future(
            self._thread.submit(self._commit, statements, lease)
        )
        return renewed

    def close(self, *, abandon: bool = False) -> None:
        """Dispose the connection and end the thread; `abandon` a thread stuck in a commit."""
        if not abandon:
            self._thread.submit(self._engine.dispose).result()
        self._thread.stop()

    def _prepare(self, step: Step) -> _Prepared:
        compiled = self._driver_statement(step)
        if compiled is None:
            return step, None, step.mappings()
        sql, reorder = compiled
        if reorder is None:
            return step, sql, step.rows
        return step, sql, [reorder(row) for row in step.rows]

    def _commit(self, statements: list[_Prepared], lease: LeaseWrites | None) -> bool:
        renewed = False
        with self._engine.begin() as connection:
            # The sqlite3 connection itself, in SQLAlchemy's transaction: its
            # executemany skips SQLAlchemy's per-statement work (~0.1 ms a commit,
            # on this thread but under the GIL the loop and the tasks need).
            driver = connection.connection.driver_connection
            assert driver is not None
            fence = lease is not None and bool(lease.renew)
            if fence and lease is not None and (lease.renew_due or not statements):
                _renew(driver, lease)  # first: it takes the write lock
                renewed, fence = True, False
            for step, sql, rows in statements:
                if sql is None:
                    connection.execute(step.statement, rows)
                    continue
                try:
                    driver.executemany(sql, rows)
                except sqlite3.Error as exc:  # raised as SQLAlchemy would: IntegrityError...
                    raise sa.exc.DBAPIError.instance(
                        sql, rows, exc, sqlite3.Error, dialect=self._engine.dialect, ismulti=True
                    ) from exc
            # The batch's first statement took the write lock: a takeover needs it
            # too, so before `safe_until` none can have happened.
            if fence and lease is not None and time.time() >= lease.safe_until:
                _renew(driver, lease)
                renewed = True
            if lease is not None and lease.take:
                connection.execute(insert_statement(), lease.owner_rows())
            if lease is not None and lease.drop:
                connection.execute(delete_statement(lease))
        return renewed

    def _driver_statement(self, step: Step) -> _DriverStatement | None:
        """The driver SQL of a step's statement for its columns, compiled once; None
        if it cannot take positional rows (then it runs through Core with dicts)."""
        cache_key = (id(step.statement), step.columns)
        if cache_key not in self._compiled:
            self._compiled[cache_key] = self._compile(step.statement, step.columns)
        return self._compiled[cache_key]

    def _compile(
        self, statement: sa.Executable, columns: tuple[str, ...]
    ) -> _DriverStatement | None:
        if not isinstance(statement, ClauseElement):
            return None
        compiled = statement.compile(dialect=self._engine.dialect, column_keys=list(columns))
        order = compiled.positiontup if isinstance(compiled, SQLCompiler) else None
        if not order or not all(name in columns for name in order):
            return None
        if tuple(order) == columns:
            return compiled.string, None
        positions = [columns.index(name) for name in order]
        return compiled.string, lambda row: tuple([row[i] for i in positions])


def _renew(driver: Any, lease: LeaseWrites) -> None:
    """Renew the leases `lease` holds; LeaseLost if another process took one over."""
    if driver.executemany(RENEW_SQLITE, renew_rows(lease)).rowcount != len(lease.renew):
        raise LeaseLost(_lost(driver, lease))


def _lost(driver: Any, lease: LeaseWrites) -> list[str]:
    mine = "SELECT 1 FROM execution_owners WHERE execution_id = ? AND owner_id = ?"
    owner_id = lease.owner.owner_id
    return [eid for eid in lease.renew if driver.execute(mine, (eid, owner_id)).fetchone() is None]
