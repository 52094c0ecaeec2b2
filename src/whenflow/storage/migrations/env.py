"""Alembic environment for whenflow's migrations.

`whenflow.storage.database.upgrade()` runs Alembic inside an async engine's
`run_sync` and hands the open connection over in `config.attributes`; that is
the only way whenflow itself uses it. Run by hand (`alembic -x url=...` with a
config whose `script_location` points here), it connects to `sqlalchemy.url`.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context

from whenflow.storage.tables import metadata

config = context.config


def _configure_and_run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_url(url: str) -> None:
    from whenflow.storage.database import make_engine

    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_configure_and_run)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        from whenflow.storage.database import default_database_url

        url = default_database_url()
    asyncio.run(_run_with_url(url))


if context.is_offline_mode():
    raise SystemExit("whenflow migrations run online only: `whenflow db upgrade`")
run_migrations_online()
