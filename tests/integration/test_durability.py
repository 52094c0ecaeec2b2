"""WHENFLOW_DURABILITY: what a commit survives, set on the real connections that commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from whenflow.services.settings import InvalidSetting, Settings
from whenflow.storage.database import Durability, make_engine, upgrade
from whenflow.storage.state_store import SqlStateStore

# SQLite's numbering of PRAGMA synchronous: https://sqlite.org/pragma.html#pragma_synchronous
NORMAL, FULL = 1, 2


@pytest.mark.parametrize(
    ("level", "expected"), [(Durability.PROCESS, NORMAL), (Durability.POWER, FULL)]
)
async def test_sqlite_commits_are_synced_as_the_level_says(
    tmp_path: Path, level: Durability, expected: int
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", durability=level)
    try:
        await upgrade(engine)
        async with engine.connect() as connection:
            reader = (await connection.exec_driver_sql("PRAGMA synchronous")).scalar()
        async with SqlStateStore(engine, durability=level) as store:
            writer = await store.writer_pragma("synchronous")
    finally:
        await engine.dispose()
    assert (reader, writer) == (expected, expected)


@pytest.mark.services
async def test_power_forces_synchronous_commit_on_postgresql(postgres_databases: Any) -> None:
    url = postgres_databases.create()
    database = url.rsplit("/", 1)[1]
    postgres_databases.admin(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
    seen: dict[Durability, str] = {}
    for level in Durability:
        engine = make_engine(url, durability=level)
        try:
            async with engine.connect() as connection:
                seen[level] = (await connection.exec_driver_sql("SHOW synchronous_commit")).scalar()
        finally:
            await engine.dispose()
    # `process` leaves the server's setting alone; `power` never commits without a sync.
    assert seen == {Durability.PROCESS: "off", Durability.POWER: "on"}


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHENFLOW_DATABASE_URL", "sqlite+aiosqlite:///unused.db")
    monkeypatch.delenv("WHENFLOW_DURABILITY", raising=False)
    assert Settings.from_env().durability is Durability.PROCESS
    monkeypatch.setenv("WHENFLOW_DURABILITY", "Power")
    assert Settings.from_env().durability is Durability.POWER
    monkeypatch.setenv("WHENFLOW_DURABILITY", "sometimes")
    with pytest.raises(InvalidSetting, match=r"WHENFLOW_DURABILITY='sometimes'.*process.*power"):
        Settings.from_env()
