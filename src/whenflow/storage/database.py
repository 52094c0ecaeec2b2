"""Where the database is, how to connect to it, and bringing its schema to head.

SQLite in WAL mode under `$WHENFLOW_HOME` is the embedded default; any
`postgresql+asyncpg://` URL works with the same tables and migrations.

`upgrade()` is called on every `whenflow run`, so it has a fast path: it reads
`alembic_version` and returns without importing Alembic when the database is
already at `HEAD_REVISION` (a test keeps that constant equal to the scripts).

`$WHENFLOW_HOME` is private to its user: the folders whenflow creates there
are 0700 and the SQLite database it creates is 0600 (SQLite gives its `-wal`
and `-shm` files the database file's mode), whatever the umask.

A setting that cannot work (an unparseable or unsupported URL, a database
that cannot be reached) raises `StoreSettingsError`, naming what to change.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from whenflow.domain.errors import StoreError, StoreSettingsError
from whenflow.storage.private_files import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    create_private_file,
    make_private_dirs,
    tighten,
)

# The newest revision in migrations/versions; bump it with every new migration.
HEAD_REVISION = "0006"

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# How long a SQLite writer waits for another process's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000

# How long opening a PostgreSQL connection may take before the URL is reported unreachable.
CONNECT_TIMEOUT_S = 10

DATABASE_URL_HELP = (
    "set WHENFLOW_DATABASE_URL to sqlite+aiosqlite:///PATH "
    "or postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB, or unset it"
)


# Whenflow's own entries in the home, made private if an older version left them open.
_OWN_FILES = ("whenflow.db", "whenflow.db-wal", "whenflow.db-shm")
_OWN_DIRS = ("artifacts", "cache")


def whenflow_home() -> Path:
    """`$WHENFLOW_HOME` (default `~/.whenflow`), created (0700) if missing.

    A home that exists keeps its own mode (it may be any folder the user
    chose); whenflow's entries in it (the database, `artifacts/`, `cache/`)
    are made private if they are not.
    """
    home = Path(os.environ.get("WHENFLOW_HOME") or Path.home() / ".whenflow").expanduser()
    try:
        make_private_dirs(home)
        for name in _OWN_FILES:
            tighten(home / name, PRIVATE_FILE_MODE)
        for name in _OWN_DIRS:
            tighten(home / name, PRIVATE_DIR_MODE)
    except OSError as exc:
        raise StoreSettingsError(
            f"cannot create WHENFLOW_HOME {str(home)!r}: {exc.strerror or exc}; "
            "point WHENFLOW_HOME at a folder you can write"
        ) from exc
    return home


def default_database_url() -> str:
    """The embedded SQLite database: `sqlite+aiosqlite:///$WHENFLOW_HOME/whenflow.db`."""
    return f"sqlite+aiosqlite:///{whenflow_home() / 'whenflow.db'}"


class Durability(StrEnum):
    """What a committed write survives (`WHENFLOW_DURABILITY`).

    `process`: the whenflow process dying (SQLite `synchronous=NORMAL` in WAL
    mode: a commit is in the WAL file, synced at checkpoints). `power`: the
    machine losing power too (SQLite `synchronous=FULL`: the WAL is synced at
    every group commit). PostgreSQL's own setting is left alone for `process`
    (its default, `synchronous_commit=on`, is already power-safe); `power`
    forces `synchronous_commit=on` for whenflow's sessions.
    """

    PROCESS = "process"
    POWER = "power"


def sqlite_configurer(durability: Durability = Durability.PROCESS) -> Callable[[Any, Any], None]:
    """The `connect` listener that sets up a SQLite connection for `durability`."""
    return functools.partial(configure_sqlite, durability=durability)


def make_engine(
    url: str | None = None,
    *,
    durability: Durability = Durability.PROCESS,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """An AsyncEngine for `url` (default: the embedded SQLite database).

    SQLite connections get WAL journaling (readers never block the writer),
    `synchronous=NORMAL` or `FULL` (see `Durability`), foreign keys and a busy
    timeout, set on every new connection.
    """
    try:
        target = make_url(url or default_database_url())
    except ArgumentError:
        # The text is not echoed: it may hold a password.
        raise StoreSettingsError(
            f"the database URL is not a URL whenflow can parse; {DATABASE_URL_HELP}"
        ) from None
    backend = target.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreSettingsError(
            f"unsupported database URL {target!r} (a {backend} database); {DATABASE_URL_HELP}"
        )
    if backend == "postgresql":
        engine_kwargs.setdefault("pool_pre_ping", True)
        if target.get_driver_name() == "asyncpg":
            connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S}
            if durability is Durability.POWER:
                connect_args["server_settings"] = {"synchronous_commit": "on"}
            engine_kwargs.setdefault("connect_args", connect_args)
    try:
        engine = create_async_engine(target, **engine_kwargs)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreSettingsError(
            f"cannot use the database URL {target!r}: {exc}; it needs an asyncio driver: "
            f"{DATABASE_URL_HELP}"
        ) from None
    if backend == "sqlite":
        try:
            _create_sqlite_file(target.database)  # creating the engine did not connect
        except StoreSettingsError:
            engine.sync_engine.dispose()
            raise
        event.listen(engine.sync_engine, "connect", sqlite_configurer(durability))
    return engine


def _create_sqlite_file(database: str | None) -> None:
    """Create a new SQLite database file as 0600 before SQLite creates it umask-wide."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    if not path.parent.is_dir():
        raise StoreSettingsError(
            f"the folder of the database file {database!r} does not exist; create it, or "
            f"{DATABASE_URL_HELP}"
        )
    try:
        create_private_file(path)
    except OSError as exc:
        raise StoreSettingsError(
            f"cannot create the database file {database!r}: {exc.strerror or exc}; "
            f"{DATABASE_URL_HELP}"
        ) from exc


def configure_sqlite(
    dbapi_connection: Any, _record: Any, durability: Durability = Durability.PROCESS
) -> None:
    synchronous = "FULL" if durability is Durability.POWER else "NORMAL"
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


async def current_revision(connection: AsyncConnection) -> str | None:
    """The revision recorded in `alembic_version`, or None for an empty database."""

    def read(sync_conn: sa.Connection) -> str | None:
        if not sa.inspect(sync_conn).has_table("alembic_version"):
            return None
        return sync_conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    return await connection.run_sync(read)


async def upgrade(target: str | AsyncEngine | None = None) -> bool:
    """Bring the database schema to the newest migration.

    Args:
        target: a database URL, an engine (left open), or None for the default.

    Returns:
        True if migrations ran, False if the database was already at head.
    """
    engine = target if isinstance(target, AsyncEngine) else make_engine(target)
    try:
        async with _first_connection(engine) as connection:
            if await current_revision(connection) == HEAD_REVISION:
                return False
        async with engine.begin() as connection:
            await connection.run_sync(_run_alembic_upgrade)
        return True
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot upgrade the database {engine.url!r}: {exc}") from exc
    finally:
        if engine is not target:
            await engine.dispose()


@asynccontextmanager
async def _first_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection, or StoreSettingsError saying the database cannot be reached.

    Drivers raise their own exception trees when a connection cannot be made
    (an OSError for a refused port, asyncpg's for a wrong password or an
    unknown database), so every failure to connect is caught here.
    """
    try:
        connection = await engine.connect()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreSettingsError(
            f"cannot connect to the database {engine.url!r}: {reason}; check that it is "
            f"running and reachable, or {DATABASE_URL_HELP}"
        ) from exc
    try:
        yield connection
    finally:
        await connection.close()


def alembic_config(connection: sa.Connection | None = None) -> Any:
    """An Alembic `Config` pointing at the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _run_alembic_upgrade(sync_conn: sa.Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(sync_conn), "head")
