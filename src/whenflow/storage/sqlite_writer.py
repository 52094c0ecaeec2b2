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
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from whenflow.domain.records import Record
from whenflow.storage.write_batch import BatchStatements, Row, Step, plan_batch

# A statement for the driver: its SQL text, and how to reorder a planned row
# into the SQL's parameter order (None: the row is already in that order).
_DriverStatement = tuple[str, Callable[[Row], Row] | None]
# What the writer thread runs: driver SQL with tuples, or (SQL None) the Core
# statement with dicts.
_Prepared = tuple[Step, str | None, list[Any]]


def file_url(url: URL) -> URL | None:
    """The synchronous URL of a file-backed SQLite database, or None."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):
        return None
    return url.set(drivername="sqlite")


class SqliteBatchWriter:
    """Commits whole batches on its own thread; `commit` is awaited by the store's writer."""

    def __init__(self, url: URL, configure: Any) -> None:
        self._engine = sa.create_engine(url, poolclass=sa.pool.SingletonThreadPool)
        sa.event.listen(self._engine, "connect", configure)
        self._statements = BatchStatements("sqlite")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="whenflow-sqlite-writer")
        self._compiled: dict[tuple[int, tuple[str, ...]], _DriverStatement | None] = {}

    async def commit(self, batch: list[Record]) -> None:
        # Plan (JSON, tuples) here on the loop; the thread then runs only the
        # driver's C-level executemany and commit, which release the GIL, so
        # it hardly competes with the threads running tasks.
        statements = [self._prepare(step) for step in plan_batch(batch, self._statements)]
        await asyncio.get_running_loop().run_in_executor(self._thread, self._commit, statements)

    def close(self) -> None:
        self._thread.submit(self._engine.dispose).result()
        self._thread.shutdown(wait=True)

    def _prepare(self, step: Step) -> _Prepared:
        compiled = self._driver_statement(step)
        if compiled is None:
            return step, None, step.mappings()
        sql, reorder = compiled
        if reorder is None:
            return step, sql, step.rows
        return step, sql, [reorder(row) for row in step.rows]

    def _commit(self, statements: list[_Prepared]) -> None:
        with self._engine.begin() as connection:
            # The sqlite3 connection itself, in SQLAlchemy's transaction: its
            # executemany skips SQLAlchemy's per-statement work (~0.1 ms a commit,
            # on this thread but under the GIL the loop and the tasks need).
            driver = connection.connection.driver_connection
            assert driver is not None
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
