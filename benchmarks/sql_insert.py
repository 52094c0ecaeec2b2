"""Bulk load through the `sql` executor against plain SQLAlchemy (issue #15).

    .venv/bin/python benchmarks/sql_insert.py [--rows 100000] [--repeat 3]
        [--url postgresql://postgres@127.0.0.1:5432/test]

Three ways to put the same rows into a fresh PostgreSQL table, each timed
from the first row sent to the commit:

- plain: SQLAlchemy `connection.execute(table.insert(), rows)` with psycopg,
  in one transaction: the baseline;
- executor: `SqlExecutor.execute` of a task `insert: {table, rows}`, as the
  engine calls it (batches of 10,000 rows, one transaction);
- pipeline: `whenflow run` of a two-node pipeline (a python task returns the
  rows, a `sql` task loads them), timed from the `load.started` event to
  `load.completed` in the durable event log: what a user sees, including the
  variable pool.

Figures are printed (rows/s, the best of `--repeat` runs), never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from whenflow.domain.definitions import TaskSpec  # noqa: E402
from whenflow.domain.task_io import TaskRequest  # noqa: E402
from whenflow.executors.sql import SqlExecutor, driver_url  # noqa: E402
from whenflow.storage.connections import EnvironmentConnections  # noqa: E402

COLUMNS = "id INTEGER, code VARCHAR(16), price DOUBLE PRECISION, day VARCHAR(10), note TEXT"
ROWS_MODULE = """
def rows(count: int) -> dict:
    return {"rows": [
        {"id": i, "code": f"S{i % 5000:05d}", "price": i / 100, "day": f"2024-01-{1 + i % 28:02d}",
         "note": None if i % 3 else "n" * 20}
        for i in range(count)
    ]}
"""


def make_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "code": f"S{i % 5000:05d}",
            "price": i / 100,
            "day": f"2024-01-{1 + i % 28:02d}",
            "note": None if i % 3 else "n" * 20,
        }
        for i in range(count)
    ]


class _Ctx:
    execution_id, node_id, attempt, idempotency_key, item_index = "bench", "load", 1, "b/l", None

    def emit(self, name: str, payload: Any = None) -> None:
        return None

    def log(self, message: str, *, stream: str = "log") -> None:
        return None


def fresh_table(engine: sa.Engine) -> str:
    name = f"i15sql_bench_{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE TABLE {name} ({COLUMNS})"))
    return name


def drop(engine: sa.Engine, name: str, expected: int) -> None:
    with engine.begin() as connection:
        count = connection.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar()
        connection.execute(sa.text(f"DROP TABLE {name}"))
    assert count == expected, f"{name} holds {count} rows, not {expected}"


def plain(engine: sa.Engine, rows: list[dict[str, Any]]) -> float:
    name = fresh_table(engine)
    table = sa.table(name, *(sa.column(c) for c in rows[0]))
    start = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(table.insert(), rows)
    elapsed = time.perf_counter() - start
    drop(engine, name, len(rows))
    return elapsed


def executor(engine: sa.Engine, url: str, rows: list[dict[str, Any]]) -> float:
    name = fresh_table(engine)
    sql = SqlExecutor(EnvironmentConnections({"WHENFLOW_CONN_BENCH": url}))
    request = TaskRequest(
        "bench",
        "load",
        1,
        TaskSpec("sql", {"connection": "bench", "insert": {"table": name, "rows": rows}}),
        {},
        "bench/load",
    )
    asyncio.run(_warm(sql, url))  # connect first: the plain run's engine is warm too
    start = time.perf_counter()
    result = asyncio.run(sql.execute(request, _Ctx()))
    elapsed = time.perf_counter() - start
    sql.close()
    assert result.outputs["rowcount"] == len(rows)
    drop(engine, name, len(rows))
    return elapsed


async def _warm(sql: SqlExecutor, url: str) -> None:
    from whenflow.domain.connections import Connection

    await sql.test_connection(Connection("bench", url))


def pipeline(engine: sa.Engine, url: str, count: int) -> float:
    name = fresh_table(engine)
    with tempfile.TemporaryDirectory(prefix="whenflow-bench-") as folder:
        work = Path(folder)
        (work / "benchrows.py").write_text(ROWS_MODULE)
        (work / "load.yaml").write_text(
            textwrap.dedent(
                f"""
                apiVersion: whenflow/v1
                kind: Pipeline
                metadata: {{name: sql_bench, version: 1.0.0}}
                spec:
                  nodes:
                    - id: make
                      task: {{type: python, callable: "benchrows:rows"}}
                      inputBindings: {{count: {count}}}
                    - id: load
                      task:
                        type: sql
                        connection: bench
                        insert: {{table: {name}, rows: "{{{{ make.rows }}}}"}}
                """
            )
        )
        env = {**os.environ, "WHENFLOW_HOME": str(work / "home"), "WHENFLOW_CONN_BENCH": url}
        proc = subprocess.run(
            [sys.executable, "-m", "whenflow.cli.main", "run", str(work / "load.yaml"), "--json"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        result = json.loads(proc.stdout)
        assert result["status"] == "completed", proc.stderr or result
        events = subprocess.run(
            [
                sys.executable,
                "-m",
                "whenflow.cli.main",
                "executions",
                "events",
                result["execution_id"],
                "--json",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        times = {
            e["event_type"]: datetime.fromisoformat(e["timestamp"])
            for e in json.loads(events.stdout)
        }
    drop(engine, name, count)
    return (times["load.completed"] - times["load.started"]).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    rows = make_rows(args.rows)
    engine = sa.create_engine(driver_url(args.url))
    try:
        results = {
            "plain SQLAlchemy executemany": min(plain(engine, rows) for _ in range(args.repeat)),
            "sql executor (insert)": min(
                executor(engine, args.url, rows) for _ in range(args.repeat)
            ),
            "whenflow run (python -> sql)": min(
                pipeline(engine, args.url, args.rows) for _ in range(args.repeat)
            ),
        }
    finally:
        engine.dispose()
    print(f"{args.rows:,} rows into PostgreSQL, best of {args.repeat}:")
    for label, seconds in results.items():
        print(f"  {label:<30} {seconds:7.3f} s  {args.rows / seconds:>10,.0f} rows/s")


if __name__ == "__main__":
    main()
