"""Where the database is, how to connect to it, and bringing its schema to head.

SQLite in WAL mode under `$WHENFLOW_HOME` is the embedded default; any
`postgresql+asyncpg://` URL works with the same tables and migrations.

`upgrade()` is called on every `whenflow run`, so it has a fast path: it reads
`alembic_version` and returns without importing Alembic when the database is
already at `HEAD_REVISION` (a test keeps that constant equal to the scripts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from whenflow.domain.errors import StoreError

# The newest revision in migrations/versions; bump it with every new migration.
HEAD_REVISION = "0004"

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# How long a SQLite writer waits for another process's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def whenflow_home() -> Path:
    """`$WHENFLOW_HOME` (default `~/.whenflow`), created if missing."""
    home = Path(os.environ.get("WHENFLOW_HOME") or Path.home() / ".whenflow").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create WHENFLOW_HOME {str(home)!r}: {exc}") from exc
    return home


def default_database_url() -> str:
    """The embedded SQLite database: `sqlite+aiosqlite:///$WHENFLOW_HOME/whenflow.db`."""
    return f"sqlite+aiosqlite:///{whenflow_home() / 'whenflow.db'}"


def make_engine(url: str | None = None, **engine_kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for `url` (default: the embedded SQLite database).

    SQLite connections get WAL journaling (readers never block the writer),
    `synchronous=NORMAL` (durable at checkpoints, safe against corruption),
    foreign keys and a busy timeout, set on every new connection.
    """
    target = make_url(url or default_database_url())
    backend = target.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database URL {target!r}; use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    if backend == "postgresql":
        engine_kwargs.setdefault("pool_pre_ping", True)
    engine = create_async_engine(target, **engine_kwargs)
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", configure_sqlite)
    return engine


def configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
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
        async with engine.connect() as connection:
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
