"""SQLite batches committed in one hop to a dedicated writer thread (DESIGN.md §7).

Through aiosqlite every statement of a batch and its commit are a separate
round trip to aiosqlite's thread (~7 per batch, ~0.1 ms each on a small VM),
and in a sequential chain each batch holds one node, so those hops were most of
a python task's overhead. Here the whole batch — planning, `executemany` of
the same SQLAlchemy Core statements, commit — runs in one call on one thread
with a synchronous connection to the same file. Reads and migrations keep
using the async engine; WAL lets them run beside this single writer.

Statements are compiled once per key shape by SQLAlchemy's SQLite dialect and
handed to the driver's `executemany` with plain tuples: the values are already
str/int/float/None, and SQLAlchemy's per-row parameter processing was about
half of the store's cost per node.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from whenflow.domain.records import Record
from whenflow.storage.write_batch import BatchStatements, Step, plan_batch


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
        self._compiled: dict[tuple[int, tuple[str, ...]], tuple[str, tuple[str, ...]] | None] = {}

    async def commit(self, batch: list[Record]) -> None:
        # Plan (JSON, tuples) here on the loop; the thread then runs only the
        # driver's C-level executemany and commit, which release the GIL, so
        # it hardly competes with the threads running tasks.
        statements = [self._prepare(step) for step in plan_batch(batch, self._statements)]
        await asyncio.get_running_loop().run_in_executor(self._thread, self._commit, statements)

    def close(self) -> None:
        self._thread.submit(self._engine.dispose).result()
        self._thread.shutdown(wait=True)

    def _prepare(self, step: Step) -> tuple[Step, str | None, list[Any]]:
        compiled = self._driver_statement(step, self._engine.dialect)
        if compiled is None:
            return step, None, step.rows
        sql, keys = compiled
        pick = itemgetter(*keys)
        rows = [pick(row) for row in step.rows]
        if len(keys) == 1:
            rows = [(value,) for value in rows]
        return step, sql, rows

    def _commit(self, statements: list[tuple[Step, str | None, list[Any]]]) -> None:
        with self._engine.begin() as connection:
            for step, sql, rows in statements:
                if sql is None:
                    connection.execute(step.statement, rows)
                else:
                    connection.exec_driver_sql(sql, rows)

    def _driver_statement(
        self, step: Step, dialect: sa.Dialect
    ) -> tuple[str, tuple[str, ...]] | None:
        if not step.rows or not isinstance(step.statement, ClauseElement):
            return None
        keys = tuple(step.rows[0])
        cache_key = (id(step.statement), keys)
        if cache_key not in self._compiled:
            compiled = step.statement.compile(dialect=dialect, column_keys=list(keys))
            order = compiled.positiontup if isinstance(compiled, SQLCompiler) else None
            usable = order is not None and all(name in keys for name in order)
            self._compiled[cache_key] = (
                (compiled.string, tuple(order)) if usable and order else None
            )
        found = self._compiled[cache_key]
        if found is None or any(tuple(row) != keys for row in step.rows):
            return None
        return found
