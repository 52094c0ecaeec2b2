"""Alembic migrations: they build the schema on empty databases and head equals the models."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from whenflow.storage import tables
from whenflow.storage.database import (
    HEAD_REVISION,
    alembic_config,
    current_revision,
    make_engine,
    upgrade,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    databases: Any = request.getfixturevalue("postgres_databases")
    url: str = databases.create()
    return url


def _diff_against_models(connection: sa.Connection) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, tables.metadata))


def test_head_revision_constant_matches_the_scripts() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_current_head() == HEAD_REVISION


async def test_upgrade_builds_the_schema_and_head_equals_the_models(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        assert await upgrade(engine) is True
        async with engine.connect() as conn:
            assert await current_revision(conn) == HEAD_REVISION
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            assert set(tables.metadata.tables) <= names
            assert await conn.run_sync(_diff_against_models) == []
    finally:
        await engine.dispose()


async def test_upgrade_at_head_skips_alembic(empty_db_url: str) -> None:
    assert await upgrade(empty_db_url) is True
    # A fresh interpreter, as `whenflow run` would be: alembic must not even be imported.
    probe = (
        "import asyncio, sys\n"
        "from whenflow.storage.database import upgrade\n"
        f"ran = asyncio.run(upgrade({empty_db_url!r}))\n"
        "print(ran, 'alembic' in sys.modules)\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", probe, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    assert stdout.decode().split() == ["False", "False"]


async def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10_000
    finally:
        await engine.dispose()


def test_default_url_lives_in_whenflow_home(tmp_home: Path) -> None:
    from whenflow.storage.database import default_database_url

    assert default_database_url() == f"sqlite+aiosqlite:///{tmp_home / 'whenflow.db'}"
