"""One `sql` attempt in its worker thread: statements, insert, result (executors/sql.py).

`AttemptWork.run` opens a connection, runs the statements of `query` then
the `insert` in one transaction, and turns the last result into `rows` or a
Parquet file (`ParquetSink`). `Interrupter` stops the running statement when
the attempt is cancelled. Errors become `SqlFailed` with the database's own
words, never the bound values.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whenflow.executors.errors import InvalidTaskConfig, SqlFailed
from whenflow.executors.sql_config import TASK_TYPE, InsertSpec, SqlConfig
from whenflow.executors.sql_values import ParquetSink, json_safe, parquet_batches, unique_names

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as SqlConnection
    from sqlalchemy.engine import CursorResult, Engine

DEFAULT_MAX_ROWS = 1000
DEFAULT_MAX_BYTES = 1024 * 1024
_FETCH_ROWS = 1000


@dataclass(frozen=True, slots=True)
class ResultLimits:
    """Above either limit (or with `parquet`), a result becomes a Parquet artifact."""

    max_rows: int = DEFAULT_MAX_ROWS
    max_bytes: int = DEFAULT_MAX_BYTES


_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})


def bindable(value: Any) -> Any:
    """A bound value as drivers take it: objects and lists as JSON text."""
    if type(value) in _PLAIN_TYPES:  # the common case, checked first: bulk loads call this a lot
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def split_statements(sql: str) -> list[str]:
    """The statements of `sql`, cut at `;` outside strings and comments; empty ones dropped."""
    import sqlparse

    statements = []
    for statement in sqlparse.split(sql):
        if sqlparse.format(statement, strip_comments=True).strip().strip(";").strip():
            statements.append(statement.strip())
    return statements


def bindable_text(statement: str) -> str:
    """`statement` with the colons inside comments, literals and `::` casts escaped (`\\:`).

    SQLAlchemy's `text()` takes every `:name` as a parameter, even in
    `-- until :day` or `'12:30:am'`; only real placeholders must bind.
    """
    import sqlparse
    from sqlparse import tokens

    parts = []
    parsed: Any = sqlparse.parse(statement)[0]  # sqlparse's methods are untyped
    for token in parsed.flatten():
        value = token.value
        if ":" in value and (token.ttype in tokens.Comment or token.ttype in tokens.Literal):
            value = value.replace(":", "\\:")
        elif value == "::" and token.ttype in tokens.Punctuation:  # `:day::date` binds `day`
            value = "\\:\\:"
        parts.append(value)
    return "".join(parts)


class Interrupter:
    """Interrupts the statement running on a connection, from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None
        self._interrupted = False

    def attach(self, dbapi_connection: Any) -> None:
        with self._lock:
            self._connection = dbapi_connection
            if self._interrupted:
                self._send()

    def interrupt(self) -> None:
        with self._lock:
            self._interrupted = True
            self._send()

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def _send(self) -> None:
        for method in ("cancel", "interrupt"):
            call = getattr(self._connection, method, None)
            if callable(call):
                try:
                    call()
                except Exception:  # the statement may have ended meanwhile
                    return
                return


@dataclass
class AttemptWork:
    """One attempt, run in a worker thread."""

    node_id: str
    config: SqlConfig
    params: dict[str, Any]
    limits: ResultLimits
    batch_rows: int
    interrupter: Interrupter

    def run(self, engine: Engine) -> tuple[dict[str, Any], tuple[str, ...]]:
        from sqlalchemy.exc import SQLAlchemyError

        statements = split_statements(self.config.query) if self.config.query else []
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise SqlFailed(
                self.node_id, f"connecting ({engine.dialect.name})", _reason(exc)
            ) from None
        with connection:
            self.interrupter.attach(connection.connection.dbapi_connection)
            if self.interrupter.interrupted:
                raise asyncio.CancelledError
            try:
                with connection.begin():
                    return self._transaction(connection, statements)
            except SQLAlchemyError as exc:  # the commit itself failed
                raise SqlFailed(self.node_id, "commit", _reason(exc)) from None

    def _transaction(
        self, connection: SqlConnection, statements: Sequence[str]
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        import sqlalchemy as sa
        from sqlalchemy.exc import SQLAlchemyError

        changed = 0
        last: tuple[dict[str, Any], tuple[str, ...]] | None = None
        for number, statement in enumerate(statements, 1):
            self._stop_if_interrupted()
            try:
                result = connection.execute(sa.text(bindable_text(statement)), self.params)
                if _duckdb_count(connection, result, statement):
                    changed += sum(row[0] or 0 for row in result.fetchall())
                elif result.returns_rows:
                    last = self._collect(result)
                elif result.rowcount and result.rowcount > 0:
                    changed += result.rowcount
            except SQLAlchemyError as exc:
                where = f"statement {number} of {len(statements)} ({_excerpt(statement)})"
                if self.config.query_origin != "query":
                    where += f" in {self.config.query_origin}"
                raise SqlFailed(self.node_id, where, _reason(exc)) from None
        if self.config.insert is not None:
            try:
                changed += self._insert(connection, self.config.insert)
            except BaseException:
                for path in last[1] if last is not None else ():
                    shutil.rmtree(path, ignore_errors=True)
                raise
        self._stop_if_interrupted()  # a cancel that came while no statement ran: no commit
        if last is not None:
            return last
        return {"rowcount": changed, "columns": [], "rows": []}, ()

    def _stop_if_interrupted(self) -> None:
        """Raise CancelledError (the transaction rolls back) once the attempt is cancelled."""
        if self.interrupter.interrupted:
            raise asyncio.CancelledError

    def _collect(self, result: CursorResult[Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The result as `rows`, or, past the limits, as a Parquet file written as it comes."""
        keys = result.keys()  # iterating the result itself would consume rows
        columns = unique_names(str(c) for c in keys)  # `SELECT a, a`: a, a_2
        mode = self.config.output
        held: list[tuple[Any, ...]] = []  # the rows so far, until they become a Parquet file
        rows: list[dict[str, Any]] = []
        size = 2
        sink: ParquetSink | None = None
        folder: str | None = None
        try:
            while batch := result.fetchmany(_FETCH_ROWS):
                for row in batch:
                    values = tuple(row)
                    if sink is not None:
                        sink.add(values)
                        continue
                    held.append(values)
                    if mode == "parquet":
                        over = True
                    else:
                        obj = {c: json_safe(v) for c, v in zip(columns, values, strict=True)}
                        rows.append(obj)
                        size += len(json.dumps(obj, ensure_ascii=False)) + 1
                        limits = self.limits
                        over = mode == "auto" and (
                            len(rows) > limits.max_rows or size > limits.max_bytes
                        )
                    if over:
                        folder = tempfile.mkdtemp(prefix="whenflow-sql-")
                        sink = ParquetSink(Path(folder) / f"{self.node_id}.parquet", columns)
                        for kept in held:
                            sink.add(kept)
                        held, rows = [], []
            if sink is None and mode == "parquet":  # no row at all: still a (empty) file
                folder = tempfile.mkdtemp(prefix="whenflow-sql-")
                sink = ParquetSink(Path(folder) / f"{self.node_id}.parquet", columns)
            if sink is None:
                return {"rowcount": len(rows), "columns": columns, "rows": rows}, ()
            schema = sink.close()
        except BaseException:
            if sink is not None:
                sink.abort()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        assert folder is not None
        path = Path(folder) / f"{self.node_id}.parquet"
        outputs = {"rowcount": sink.rows, "columns": columns, "schema": schema, "artifact": path}
        return outputs, (str(path), folder)

    def _insert(self, connection: SqlConnection, spec: InsertSpec) -> int:
        import sqlalchemy as sa
        from sqlalchemy.exc import SQLAlchemyError

        table: Any = None
        columns: list[str] = []
        total = 0
        for batch in self._insert_batches(spec):
            self._stop_if_interrupted()
            if table is None:
                columns = _columns_of(batch)
                known = frozenset(columns)
                table = sa.table(spec.table, *(sa.column(c) for c in columns), schema=spec.schema)
            values = [_row_values(row, columns, known, total + i) for i, row in enumerate(batch)]
            try:
                connection.execute(table.insert(), values)
            except SQLAlchemyError as exc:
                where = f"insert into {spec.table} (rows {total + 1}-{total + len(batch)})"
                raise SqlFailed(self.node_id, where, _reason(exc)) from None
            total += len(batch)
        return total

    def _insert_batches(self, spec: InsertSpec) -> Iterator[list[Any]]:
        rows = spec.rows
        if isinstance(rows, str):
            if not Path(rows).is_file():
                raise InvalidTaskConfig(
                    TASK_TYPE,
                    f"insert.rows is the text {rows[:80]!r}, not a list of objects nor the "
                    "path of a Parquet file; bind it to an upstream `rows` or `artifact` output",
                )
            yield from parquet_batches(rows, self.batch_rows)
            return
        if not isinstance(rows, list | tuple):
            raise InvalidTaskConfig(
                TASK_TYPE,
                f"insert.rows is a {type(rows).__name__}; give a list of objects "
                "(an upstream `rows`) or the path of a Parquet file (an upstream `artifact`)",
            )
        for start in range(0, len(rows), self.batch_rows):
            yield list(rows[start : start + self.batch_rows])


def _duckdb_count(connection: SqlConnection, result: CursorResult[Any], statement: str) -> bool:
    """Whether `result` is DuckDB's report of a DDL or DML statement (one `Count` column),
    which other databases give as a row count, not as rows."""
    if connection.dialect.name != "duckdb" or not result.returns_rows:
        return False
    if list(result.keys()) != ["Count"]:
        return False
    import sqlparse

    parsed: Any = sqlparse.parse(statement)[0]
    return str(parsed.get_type()) != "SELECT"


def _columns_of(batch: Sequence[Any]) -> list[str]:
    """The columns of a load: every key of the first batch, in order of appearance."""
    columns: dict[str, None] = {}
    for index, row in enumerate(batch):
        if not isinstance(row, Mapping):
            raise InvalidTaskConfig(
                TASK_TYPE, f"insert.rows[{index}] is a {type(row).__name__}, not an object"
            )
        for key in row:
            if not isinstance(key, str) or not key or "\x00" in key:
                raise InvalidTaskConfig(TASK_TYPE, f"insert.rows[{index}]: bad column {key!r}")
            columns.setdefault(key, None)
    return list(columns)


def _row_values(
    row: Any, columns: Sequence[str], known: frozenset[str], index: int
) -> dict[str, Any]:
    if not isinstance(row, dict) and not isinstance(row, Mapping):  # dict first: fast
        raise InvalidTaskConfig(
            TASK_TYPE, f"insert.rows[{index}] is a {type(row).__name__}, not an object"
        )
    if not known.issuperset(row.keys()):
        extra = [k for k in row if k not in known]
        raise InvalidTaskConfig(
            TASK_TYPE,
            f"insert.rows[{index}] has column {extra[0]!r}, which the first rows lack; "
            "give every row the same keys (null for a missing value)",
        )
    return {c: bindable(row.get(c)) for c in columns}


def _reason(exc: BaseException) -> str:
    """The database's own words, without SQLAlchemy's echo of the SQL and the parameters."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    if not text:
        return type(cause).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(line.strip() for line in lines[:2])[:500]


def _excerpt(statement: str) -> str:
    words = " ".join(statement.split())
    return words if len(words) <= 60 else words[:57] + "..."
