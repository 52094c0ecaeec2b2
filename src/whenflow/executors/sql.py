"""The `sql` executor: statements and bulk loads on any SQLAlchemy URL (DESIGN.md §13).

    task: {type: sql, connection: warehouse, query: "SELECT * FROM t WHERE d = :day"}

SQLite works out of the box; DuckDB (`duckdb:///file.duckdb`, duckdb_engine),
PostgreSQL (psycopg 3) and MySQL/MariaDB (PyMySQL) come with the `sql` extra.
A URL without a driver gets the one whenflow installs: `postgresql://` and
`postgres://` mean `postgresql+psycopg://`, `mysql://` `mysql+pymysql://`,
`mariadb://` `mariadb+pymysql://`.

Why sync engines in a thread pool rather than async drivers: DuckDB,
PyMySQL and SQLite's standard driver are synchronous, and one code path
serves every database; psycopg's `executemany` (SQLAlchemy's
"insertmanyvalues") is as fast as an async driver's; and writing Parquet is
blocking work anyway. The loop never blocks: each attempt runs in this
executor's pool (`WHENFLOW_SQL_THREADS`, default 8). An engine (and its
connection pool) is cached per URL for the life of the executor.

One attempt is one transaction (`sql_transaction.py`): each statement of
`query` (split with sqlparse, which only cuts at `;` outside strings,
comments and dollar-quoted bodies), then `insert` (so a query can create or
empty its table first), committed together or rolled back together. Values
are bound parameters only (`:name` in the SQL; `params`, or else the node's
inputs); objects and lists are sent as JSON text. A `:word` inside a
comment or a quoted literal is no parameter.

Outputs: `rowcount`, `columns`, and `rows` (objects keyed by column, made
JSON-safe by `sql_values.json_safe`) from the last statement that returned
rows; without one, `rowcount` is the rows the statements and the insert
changed and `rows` is empty. A result over `WHENFLOW_SQL_MAX_ROWS` rows
(default 1000) or `WHENFLOW_SQL_MAX_BYTES` of JSON (default 1 MiB), or any
result with `output: parquet`, becomes `artifact` (a Parquet file in the
artifact store; downstream, the local path of it) and `schema`
(`[{name, type}]`, Arrow types) instead of `rows`. `insert.rows` accepts
such a path, so a downstream `sql` task loads it back.

Cancellation (a timeout, a cancel) interrupts the running statement where
the driver can (psycopg `cancel`, SQLite and DuckDB `interrupt`); the
transaction is then rolled back. PyMySQL cannot interrupt: the statement
runs to its end in the background, then rolls back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from whenflow.domain.connections import Connection, ConnectionResolver, UnknownConnection
from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import ExecutorEnvironment, TaskContext, TaskRequest, TaskResult
from whenflow.executors.errors import InvalidTaskConfig
from whenflow.executors.sql_config import (
    RENDERED_FIELDS,
    TASK_TYPE,
    SqlConfig,
    check_config,
    parse_config,
)
from whenflow.executors.sql_transaction import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ROWS,
    AttemptWork,
    Interrupter,
    ResultLimits,
    bindable,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

DEFAULT_THREADS = 8
INSERT_BATCH_ROWS = 10_000
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


class SqlExecutor:
    """Runs `sql` tasks on cached SQLAlchemy engines, in a thread pool."""

    task_type = TASK_TYPE
    rendered_fields = RENDERED_FIELDS
    connection_schemes = ("sqlite", "duckdb", "postgresql", "postgres", "mysql", "mariadb")

    def __init__(
        self,
        connections: ConnectionResolver,
        *,
        limits: ResultLimits | None = None,
        threads: int = DEFAULT_THREADS,
        insert_batch_rows: int = INSERT_BATCH_ROWS,
    ) -> None:
        """
        Args:
            connections: Where `connection: NAME` is looked up.
            limits: When a result becomes a Parquet artifact.
            threads: Statements running at once in this process.
            insert_batch_rows: Rows per `executemany` call of `insert`.
        """
        self._connections = connections
        self._limits = limits or ResultLimits()
        self._threads = threads
        self._batch = insert_batch_rows
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def check(self, task: TaskSpec) -> list[str]:
        """Config problems: fields, connection or url, query/file/insert, output."""
        return check_config(task)

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Run the insert and the statements in one transaction; raise SqlFailed on an error."""
        config = parse_config(request.task)
        target = self._target(config)
        params = config.params if config.params is not None else request.inputs
        if not isinstance(params, Mapping):
            raise InvalidTaskConfig(TASK_TYPE, "`params` must render to an object")
        work = AttemptWork(
            node_id=request.node_id,
            config=config,
            params={str(k): bindable(v) for k, v in params.items()},
            limits=self._limits,
            batch_rows=self._batch,
            interrupter=Interrupter(),
        )
        engine = self._engine(target, request.node_id)
        loop = asyncio.get_running_loop()
        try:
            outputs, scratch = await loop.run_in_executor(self._executor(), work.run, engine)
        except asyncio.CancelledError:
            work.interrupter.interrupt()
            raise
        return TaskResult(outputs=outputs, scratch=scratch)

    async def test_connection(self, connection: Connection) -> str:
        """Connect and run `SELECT 1`; return the database's name and version."""
        engine = self._engine(connection.url, None)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), _select_one, engine)

    def close(self) -> None:
        """Stop the thread pool and close every cached engine's connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.dispose()

    def _target(self, config: SqlConfig) -> str:
        """The connection's URL; `url` when there is no connection or it is not defined."""
        if config.connection is not None:
            try:
                return self._connections.get(config.connection).url
            except UnknownConnection:
                if config.url is None:
                    raise
        assert config.url is not None
        return config.url

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="whenflow-sql")
        return self._pool

    def _engine(self, url: str, node_id: str | None) -> Engine:
        with self._lock:
            engine = self._engines.get(url)
            if engine is None:
                engine = self._engines[url] = _create_engine(url, node_id)
            return engine


def driver_url(url: str) -> str:
    """`url` with whenflow's default driver when it names none (`postgresql://`...)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _DEFAULT_DRIVERS:
        return f"{_DEFAULT_DRIVERS[scheme.lower()]}://{rest}"
    return url


def _create_engine(url: str, node_id: str | None) -> Engine:
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    scheme = url.partition("://")[0] or url[:20]
    try:
        return sa.create_engine(driver_url(url), pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = f" of node {node_id!r}" if node_id else ""
        raise InvalidTaskConfig(
            TASK_TYPE,
            f"the database URL{where} (scheme {scheme!r}) cannot be used: {reason}; check "
            "the URL, or install its driver: pip install 'whenflow[sql]'",
        ) from None


def _select_one(engine: Engine) -> str:
    import sqlalchemy as sa

    with engine.connect() as connection:
        value = connection.execute(sa.text("SELECT 1")).scalar()
        version = ".".join(str(p) for p in engine.dialect.server_version_info or ())
    return f"{engine.dialect.name} {version}".strip() + f": SELECT 1 returned {value}"


def sql_executor(environment: ExecutorEnvironment) -> SqlExecutor:
    """The `sql` entry point of `whenflow.executors`; reads the WHENFLOW_SQL_* settings."""
    settings = environment.settings
    limits = ResultLimits(
        max_rows=_positive(settings, "WHENFLOW_SQL_MAX_ROWS", DEFAULT_MAX_ROWS),
        max_bytes=_positive(settings, "WHENFLOW_SQL_MAX_BYTES", DEFAULT_MAX_BYTES),
    )
    threads = _positive(settings, "WHENFLOW_SQL_THREADS", DEFAULT_THREADS)
    return SqlExecutor(environment.connections, limits=limits, threads=threads)


def _positive(settings: Mapping[str, str], name: str, default: int) -> int:
    text = settings.get(name, "").strip().replace("_", "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"{name}={settings[name]!r} must be a whole number above 0 (default {default})"
        )
    return int(text)
