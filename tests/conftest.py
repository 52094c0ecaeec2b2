"""Fixtures shared by every test suite.

Real parts, not mocks: tests that need PostgreSQL (or another service) use it
for real when it is reachable. `require_service` decides what happens when it
is not: skip with a reason, or fail when `WHENFLOW_REQUIRE_SERVICES=1` (CI).

Imports of heavy packages stay inside the fixtures, so a unit test that uses
none of them pays nothing.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_HOST = os.environ.get("WHENFLOW_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("WHENFLOW_TEST_PG_PORT", "5432"))
PG_ADMIN_DB = os.environ.get("WHENFLOW_TEST_PG_DB", "test")
PG_USERS = ("postgres", "root")


def services_required() -> bool:
    return os.environ.get("WHENFLOW_REQUIRE_SERVICES") == "1"


def require_service(name: str, host: str, port: int, timeout: float = 1.0) -> None:
    """Skip (or fail under WHENFLOW_REQUIRE_SERVICES=1) unless host:port accepts TCP."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc})"
    if services_required():
        pytest.fail(f"{reason}; WHENFLOW_REQUIRE_SERVICES=1 makes that an error")
    pytest.skip(f"{reason}; start it or set WHENFLOW_REQUIRE_SERVICES=1 to fail instead")


@pytest.fixture(name="require_service", scope="session")
def require_service_fixture() -> Callable[[str, str, int], None]:
    """`require_service(name, host, port)`: skip or fail unless the service answers."""
    return require_service


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh WHENFLOW_HOME for one test."""
    home = tmp_path / "whenflow-home"
    home.mkdir()
    monkeypatch.setenv("WHENFLOW_HOME", str(home))
    return home


def _run_isolated(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on its own loop in its own thread, away from pytest-asyncio's loops."""
    import asyncio
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(make())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="whenflow-test-admin")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


class PostgresDatabases:
    """Creates throw-away databases on the test server and drops them at session end."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.created: list[str] = []

    def _admin(self, sql: str) -> None:
        async def run() -> None:
            import asyncpg  # type: ignore[import-untyped]

            conn = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=self.user, database=PG_ADMIN_DB
            )
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        _run_isolated(run)

    def admin(self, sql: str) -> None:
        """Run one statement as the admin user on the test server (e.g. ALTER DATABASE)."""
        self._admin(sql)

    def create(self) -> str:
        """A new empty database; returns its SQLAlchemy URL (postgresql+asyncpg)."""
        name = f"whenflow_test_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return f"postgresql+asyncpg://{self.user}@{PG_HOST}:{PG_PORT}/{name}"

    def drop_all(self) -> None:
        for name in self.created:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


def _find_pg_user() -> str:
    async def probe(user: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=user, database=PG_ADMIN_DB, timeout=5
        )
        await conn.close()

    errors = []
    for user in (os.environ.get("WHENFLOW_TEST_PG_USER"), *PG_USERS):
        if not user:
            continue
        try:
            _run_isolated(functools.partial(probe, user))
            return user
        except Exception as exc:
            errors.append(f"{user}: {exc}")
    reason = "PostgreSQL accepts none of the test users (" + "; ".join(errors) + ")"
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """A factory of fresh PostgreSQL databases (skips when PostgreSQL is unreachable)."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    databases = PostgresDatabases(_find_pg_user())
    try:
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture(scope="session")
def postgres_url(postgres_databases: PostgresDatabases) -> str:
    """URL of one PostgreSQL database created for this test session, empty at first."""
    return postgres_databases.create()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """moto's S3 server on a loopback port (tests/s3_server.py), one per test session."""
    from s3_server import running_s3_server

    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: Any) -> str:
    """A new empty bucket on the loopback S3 server."""
    name = f"i15-{uuid.uuid4().hex[:12]}"
    s3_server.make_bucket(name)
    return name
