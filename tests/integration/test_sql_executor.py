"""The `sql` executor against real databases: SQLite and DuckDB files, PostgreSQL, MariaDB.

Tables are named `i15sql_<random>` so parallel runs on the shared servers never meet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import os
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from whenflow.domain.connections import Connection, UnknownConnection
from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import TaskRequest
from whenflow.executors.errors import InvalidTaskConfig, SqlFailed
from whenflow.executors.sql import SqlExecutor, driver_url
from whenflow.executors.sql_transaction import ResultLimits, split_statements
from whenflow.executors.sql_values import ParquetSink, json_safe
from whenflow.storage.connections import EnvironmentConnections

PG = os.environ.get("WHENFLOW_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("WHENFLOW_TEST_PG_USER", "postgres")
MARIADB = os.environ.get("WHENFLOW_TEST_MARIADB_HOST", "127.0.0.1")
INJECTION = "'; DROP TABLE x; --"


def context() -> Any:
    return importlib.import_module("taskfuncs.recording").RecordingContext()


@pytest.fixture(
    params=[
        "sqlite",
        "duckdb",
        pytest.param("postgresql", marks=pytest.mark.services),
        pytest.param("mariadb", marks=pytest.mark.services),
    ]
)
def db(request: pytest.FixtureRequest, tmp_path: Path, require_service: Any) -> Iterator[str]:
    """A database URL as a user writes it (no driver named)."""
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'data.db'}"
    elif kind == "duckdb":
        yield f"duckdb:///{tmp_path / 'data.duckdb'}"
    elif kind == "postgresql":
        require_service("PostgreSQL", PG, 5432)
        yield f"postgresql://{PG_USER}@{PG}:5432/test"
    else:
        require_service("MariaDB", MARIADB, 3306)
        yield f"mariadb://root@{MARIADB}:3306/test"


@pytest.fixture
def table(db: str) -> Iterator[str]:
    """A table name nobody else uses, dropped after the test."""
    name = f"i15sql_{uuid.uuid4().hex[:10]}"
    yield name
    engine = sa.create_engine(driver_url(db))
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


@pytest.fixture
def executor(db: str) -> Iterator[SqlExecutor]:
    sql = SqlExecutor(EnvironmentConnections({"WHENFLOW_CONN_DB": db}))
    yield sql
    sql.close()


def request_for(
    inputs: dict[str, Any] | None = None, node_id: str = "node", **config: Any
) -> TaskRequest:
    return TaskRequest(
        execution_id="exec-1",
        node_id=node_id,
        attempt=1,
        task=TaskSpec(type="sql", config={"connection": "db", **config}),
        inputs=inputs or {},
        idempotency_key=f"exec-1/{node_id}",
    )


async def run(executor: SqlExecutor, **kwargs: Any) -> dict[str, Any]:
    result = await executor.execute(request_for(**kwargs), context())
    return dict(result.outputs)


async def test_statements_run_in_one_transaction_with_bound_inputs(
    executor: SqlExecutor, table: str
) -> None:
    created = await run(
        executor,
        query=f"""
            CREATE TABLE {table} (id INTEGER, name VARCHAR(100), day DATE, amount DECIMAL(10,2));
            INSERT INTO {table} VALUES (1, :name, :day, 12.50);
            INSERT INTO {table} VALUES (2, 'b', :day, 3.00);  -- a comment; with a semicolon
            SELECT id, name, day, amount FROM {table} ORDER BY id;
        """,
        inputs={"name": INJECTION, "day": "2024-01-31"},
    )
    assert created["columns"] == ["id", "name", "day", "amount"]
    assert created["rows"] == [
        {"id": 1, "name": INJECTION, "day": "2024-01-31", "amount": 12.5},
        {"id": 2, "name": "b", "day": "2024-01-31", "amount": 3},
    ]
    assert created["rowcount"] == 2
    # The injection text is a value: the table is still there, with both rows.
    again = await run(
        executor,
        query=f"SELECT count(*) AS n FROM {table} WHERE name = :name",
        params={"name": INJECTION},
    )
    assert again["rows"] == [{"n": 1}]


async def test_a_failing_statement_rolls_back_and_names_node_and_cause(
    executor: SqlExecutor, table: str
) -> None:
    await run(executor, query=f"CREATE TABLE {table} (id INTEGER)")
    with pytest.raises(SqlFailed) as caught:
        await run(
            executor,
            node_id="load_prices",
            query=f"INSERT INTO {table} VALUES (1); SELEC broken FROM nowhere",
        )
    message = str(caught.value)
    assert message.startswith("sql task of node 'load_prices': statement 2 of 2 (SELEC broken")
    assert "syntax" in message.lower() or "parser" in message.lower()
    assert "[SQL:" not in message
    assert "parameters" not in message
    counted = await run(executor, query=f"SELECT count(*) AS n FROM {table}")
    assert counted["rows"] == [{"n": 0}]  # the first INSERT was rolled back with the second


async def test_insert_loads_rows_with_executemany(executor: SqlExecutor, table: str) -> None:
    await run(
        executor,
        query=f"CREATE TABLE {table} (code VARCHAR(20), price DOUBLE PRECISION, note VARCHAR(50))",
    )
    rows = [
        {"code": f"S{i}", "price": i / 4, "note": INJECTION if i == 7 else None}
        for i in range(2500)
    ]
    loaded = await run(executor, insert={"table": table, "rows": rows})
    assert loaded == {"rowcount": 2500, "columns": [], "rows": []}
    summed = await run(executor, query=f"SELECT count(*) AS n, sum(price) AS total FROM {table}")
    assert summed["rows"][0]["n"] == 2500
    assert float(summed["rows"][0]["total"]) == sum(i / 4 for i in range(2500))
    note = await run(executor, query=f"SELECT note FROM {table} WHERE code = 'S7'")
    assert note["rows"] == [{"note": INJECTION}]


async def test_a_large_result_becomes_a_parquet_artifact_that_loads_back(
    db: str, table: str, tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    executor = SqlExecutor(
        EnvironmentConnections({"WHENFLOW_CONN_DB": db}), limits=ResultLimits(max_rows=50)
    )
    try:
        await run(executor, query=f"CREATE TABLE {table} (id INTEGER, label VARCHAR(20))")
        rows = [{"id": i, "label": f"row {i}"} for i in range(120)]
        await run(executor, insert={"table": table, "rows": rows})
        result = await executor.execute(
            request_for(query=f"SELECT id, label FROM {table} ORDER BY id"), context()
        )
        outputs = result.outputs
        assert "rows" not in outputs
        assert outputs["rowcount"] == 120
        assert [c["name"] for c in outputs["schema"]] == ["id", "label"]
        assert outputs["schema"][1]["type"] == "string"
        path = outputs["artifact"]
        assert isinstance(path, Path)
        assert path.suffix == ".parquet"
        assert str(path) in result.scratch
        assert pq.read_table(path).to_pylist() == rows
        # Downstream: the same path as insert.rows copies the table.
        copy = f"{table}_copy"
        await run(executor, query=f"CREATE TABLE {copy} (id INTEGER, label VARCHAR(20))")
        try:
            await run(executor, insert={"table": copy, "rows": str(path)})
            loaded = await run(executor, query=f"SELECT count(*) AS n FROM {copy}")
            assert loaded["rows"] == [{"n": 120}]
        finally:
            await run(executor, query=f"DROP TABLE {copy}")
    finally:
        executor.close()


async def test_unknown_connection_and_missing_parameter(executor: SqlExecutor) -> None:
    with pytest.raises(UnknownConnection, match="WHENFLOW_CONN_NOPE"):
        await executor.execute(
            TaskRequest(
                "e", "n", 1, TaskSpec("sql", {"connection": "nope", "query": "SELECT 1"}), {}, "e/n"
            ),
            context(),
        )
    with pytest.raises(SqlFailed, match="statement 1 of 1"):
        await run(executor, query="SELECT :missing AS m")


async def test_the_query_runs_before_the_insert_in_one_transaction(
    executor: SqlExecutor, table: str
) -> None:
    rows = [{"id": 1}, {"id": 2}]
    created = await run(
        executor, query=f"CREATE TABLE {table} (id INTEGER)", insert={"table": table, "rows": rows}
    )
    assert created["rowcount"] == 2
    with pytest.raises(SqlFailed, match=r"insert into i15sql_\w+ \(rows 1-2\)"):
        await run(
            executor,
            query=f"DELETE FROM {table}",
            insert={"table": table, "rows": [{"id": 3}, {"nope": 4}]},
        )
    kept = await run(executor, query=f"SELECT id FROM {table} ORDER BY id")
    assert kept["rows"] == [{"id": 1}, {"id": 2}]  # the DELETE was rolled back


async def test_url_is_the_default_of_an_undefined_connection(tmp_path: Path) -> None:
    fallback = f"sqlite:///{tmp_path / 'fallback.db'}"
    defined = f"sqlite:///{tmp_path / 'defined.db'}"
    query = "SELECT file FROM pragma_database_list WHERE name = 'main'"
    for environ, expected in (
        ({}, "fallback.db"),
        ({"WHENFLOW_CONN_MARKET": defined}, "defined.db"),
    ):
        executor = SqlExecutor(EnvironmentConnections(environ))
        try:
            request = TaskRequest(
                "e",
                "n",
                1,
                TaskSpec("sql", {"connection": "market", "url": fallback, "query": query}),
                {},
                "e/n",
            )
            rows = (await executor.execute(request, context())).outputs["rows"]
        finally:
            executor.close()
        assert rows[0]["file"].endswith(expected)


async def test_connection_test_hook(executor: SqlExecutor, db: str) -> None:
    answer = await executor.test_connection(Connection("db", db))
    assert answer.endswith("SELECT 1 returned 1")


def test_values_are_made_json_safe(tmp_path: Path) -> None:
    async def go() -> dict[str, Any]:
        executor = SqlExecutor(EnvironmentConnections({}))
        try:
            url = f"sqlite:///{tmp_path / 'v.db'}"
            request = TaskRequest(
                "e",
                "n",
                1,
                TaskSpec("sql", {"url": url, "query": "SELECT :d AS d, :t AS t, :b AS b"}),
                {"d": dt.date(2024, 2, 29), "t": dt.datetime(2024, 1, 1, 9, 30), "b": b"\x00\xff"},
                "e/n",
            )
            return dict((await executor.execute(request, context())).outputs)
        finally:
            executor.close()

    outputs = asyncio.run(go())
    row = outputs["rows"][0]
    assert row["d"] == "2024-02-29"
    assert row["t"].startswith("2024-01-01")
    assert row["b"] == "AP8="  # base64


def test_json_safe_conversions() -> None:
    assert json_safe(Decimal("12.00")) == 12
    assert json_safe(Decimal("12.5")) == 12.5
    assert json_safe(Decimal("0.1")) == 0.1
    assert json_safe(Decimal("1234567890.12345678901234")) == "1234567890.12345678901234"
    assert json_safe(float("nan")) is None
    assert json_safe(dt.timedelta(minutes=1, seconds=30)) == 90.0
    assert json_safe(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert json_safe({"a": [dt.date(2024, 1, 2), memoryview(b"hi")]}) == {
        "a": ["2024-01-02", "aGk="]
    }


def test_the_parquet_sink_streams_and_settles_types(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "out.parquet"
    sink = ParquetSink(path, ["n", "late", "amount", "mixed", "n"], chunk_rows=3)
    expected = []
    for i in range(10):
        late = None if i < 5 else f"v{i}"  # only nulls in the first chunks
        amount = Decimal("1.50") if i < 3 else Decimal("123456789.25")  # more digits later
        mixed = i if i % 2 else f"t{i}"
        sink.add((i, late, amount, mixed, -i))
        expected.append({"n": i, "late": late, "amount": amount, "mixed": str(mixed), "n_2": -i})
    schema = sink.close()
    assert [c["type"] for c in schema] == [
        "int64",
        "string",
        "decimal128(38, 2)",
        "string",
        "int64",
    ]
    assert pq.read_table(path).to_pylist() == expected
    assert sink.rows == 10

    broken = ParquetSink(tmp_path / "broken.parquet", ["n"], chunk_rows=2)
    broken.add((1,))
    broken.add((2,))
    broken.add(("three",))
    with pytest.raises(InvalidTaskConfig, match="column 'n' changes type"):
        broken.add(("four",))
    broken.abort()


async def test_output_parquet_gives_a_file_even_for_no_rows(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    executor = SqlExecutor(EnvironmentConnections({}))
    try:
        request = TaskRequest(
            "e",
            "n",
            1,
            TaskSpec(
                "sql",
                {
                    "url": f"sqlite:///{tmp_path / 'e.db'}",
                    "output": "parquet",
                    "query": "SELECT 1 AS a WHERE 1 = 0",
                },
            ),
            {},
            "e/n",
        )
        outputs = (await executor.execute(request, context())).outputs
    finally:
        executor.close()
    assert outputs["rowcount"] == 0
    assert pq.read_table(outputs["artifact"]).num_rows == 0


def test_statement_splitting_respects_strings_comments_and_dollar_quotes() -> None:
    sql = """
        INSERT INTO t VALUES ('a;b');  -- trailing; comment
        /* block; comment */
        CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;
        ;
    """
    assert [s.split()[0] for s in split_statements(sql)] == ["INSERT", "/*"]
    assert "$$ SELECT 1; $$" in split_statements(sql)[1]


async def test_insert_quotes_table_and_column_names(tmp_path: Path) -> None:
    executor = SqlExecutor(EnvironmentConnections({}))
    url = f"sqlite:///{tmp_path / 'q.db'}"

    async def go(**config: Any) -> dict[str, Any]:
        request = TaskRequest("e", "n", 1, TaskSpec("sql", {"url": url, **config}), {}, "e/n")
        return dict((await executor.execute(request, context())).outputs)

    try:
        await go(query='CREATE TABLE "order" ("weird name" TEXT, "x; DROP TABLE t; --" TEXT)')
        rows = [{"weird name": INJECTION, "x; DROP TABLE t; --": "ok"}]
        assert (await go(insert={"table": "order", "rows": rows}))["rowcount"] == 1
        back = await go(query='SELECT * FROM "order"')
    finally:
        executor.close()
    assert back["rows"] == rows


async def test_repeated_column_names_are_made_unique(tmp_path: Path) -> None:
    executor = SqlExecutor(EnvironmentConnections({}))
    try:
        request = TaskRequest(
            "e",
            "n",
            1,
            TaskSpec(
                "sql", {"url": f"sqlite:///{tmp_path / 'u.db'}", "query": "SELECT 1 AS a, 2 AS a"}
            ),
            {},
            "e/n",
        )
        outputs = (await executor.execute(request, context())).outputs
    finally:
        executor.close()
    assert outputs["columns"] == ["a", "a_2"]
    assert outputs["rows"] == [{"a": 1, "a_2": 2}]


def test_colons_in_comments_and_literals_are_not_parameters(tmp_path: Path) -> None:
    async def go() -> dict[str, Any]:
        executor = SqlExecutor(EnvironmentConnections({}))
        try:
            query = "-- until :day\nSELECT '12:30:am' AS t, :day AS d /* :other */"
            request = TaskRequest(
                "e",
                "n",
                1,
                TaskSpec("sql", {"url": f"sqlite:///{tmp_path / 'c.db'}", "query": query}),
                {"day": "2024-01-31"},
                "e/n",
            )
            return dict((await executor.execute(request, context())).outputs)
        finally:
            executor.close()

    assert asyncio.run(go())["rows"] == [{"t": "12:30:am", "d": "2024-01-31"}]


def test_driver_defaults() -> None:
    assert driver_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert driver_url("mysql://u@h/db") == "mysql+pymysql://u@h/db"
    assert driver_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert driver_url("sqlite:///x.db") == "sqlite:///x.db"


async def test_cancellation_interrupts_a_running_sqlite_query(tmp_path: Path) -> None:
    executor = SqlExecutor(EnvironmentConnections({}), threads=1)
    endless = (
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c"
    )
    request = TaskRequest(
        "e",
        "n",
        1,
        TaskSpec("sql", {"url": f"sqlite:///{tmp_path / 'c.db'}", "query": endless}),
        {},
        "e/n",
    )
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await executor.execute(request, context())
        # The interrupted statement frees its worker: the next query answers at once.
        quick = TaskRequest(
            "e",
            "n",
            2,
            TaskSpec("sql", {"url": f"sqlite:///{tmp_path / 'c.db'}", "query": "SELECT 7 AS n"}),
            {},
            "e/n",
        )
        async with asyncio.timeout(10):
            assert (await executor.execute(quick, context())).outputs["rows"] == [{"n": 7}]
    finally:
        executor.close()


def test_insert_rows_must_be_rows_or_a_parquet_path(tmp_path: Path) -> None:
    async def go(rows: Any) -> None:
        executor = SqlExecutor(EnvironmentConnections({}))
        try:
            request = TaskRequest(
                "e",
                "n",
                1,
                TaskSpec(
                    "sql",
                    {
                        "url": f"sqlite:///{tmp_path / 'i.db'}",
                        "insert": {"table": "t", "rows": rows},
                    },
                ),
                {},
                "e/n",
            )
            await executor.execute(request, context())
        finally:
            executor.close()

    with pytest.raises(InvalidTaskConfig, match="not a list of objects nor the path"):
        asyncio.run(go("no such file"))
    with pytest.raises(InvalidTaskConfig, match=r"insert.rows\[1\] is a int"):
        asyncio.run(go([{"a": 1}, 2]))


async def test_cancellation_between_statements_rolls_back(tmp_path: Path) -> None:
    """A cancel that lands while no statement runs still stops the attempt: nothing commits."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    setup = sa.create_engine(url)
    with setup.begin() as connection:
        connection.execute(sa.text("CREATE TABLE t (n INTEGER)"))
    setup.dispose()
    executor = SqlExecutor(EnvironmentConnections({}), threads=1)
    engine = executor._engine(url, None)
    first_done, go_on = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()

    @sa.event.listens_for(engine, "after_cursor_execute")
    def pause(*_: Any) -> None:  # after statement 1, before statement 2: nothing running
        if not first_done.is_set():
            loop.call_soon_threadsafe(first_done.set)
            assert go_on.wait(10)

    query = "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"
    request = TaskRequest("e", "n", 1, TaskSpec("sql", {"url": url, "query": query}), {}, "e/n")
    task = asyncio.create_task(executor.execute(request, context()))
    try:
        async with asyncio.timeout(10):
            await first_done.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        go_on.set()
        executor.close()  # waits for the worker thread to finish the attempt
    check = sa.create_engine(url)
    with check.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0
    check.dispose()


@pytest.mark.parametrize("kind", ["duckdb", pytest.param("postgresql", marks=pytest.mark.services)])
def test_a_parameter_with_a_postgres_cast_binds(
    kind: str, tmp_path: Path, require_service: Any
) -> None:
    """`:day::date` is the parameter `day` cast to a date, not a syntax error."""
    if kind == "postgresql":
        require_service("PostgreSQL", PG, 5432)
        url = f"postgresql://{PG_USER}@{PG}:5432/test"
    else:
        url = f"duckdb:///{tmp_path / 'cast.duckdb'}"

    async def go() -> dict[str, Any]:
        executor = SqlExecutor(EnvironmentConnections({}))
        try:
            query = "SELECT :day::date AS d, '7'::int AS n"
            request = TaskRequest(
                "e",
                "n",
                1,
                TaskSpec("sql", {"url": url, "query": query}),
                {"day": "2024-02-03"},
                "e/n",
            )
            return dict((await executor.execute(request, context())).outputs)
        finally:
            executor.close()

    assert asyncio.run(go())["rows"] == [{"d": "2024-02-03", "n": 7}]
