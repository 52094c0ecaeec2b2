"""`sql` tasks through the real CLI: Parquet results read downstream, connections, canaries."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path

import pytest
from cli_helpers import connect_db, run_cli, run_json, write_pipeline

PG_URL = f"postgresql://{os.environ.get('WHENFLOW_TEST_PG_USER', 'postgres')}@127.0.0.1:5432/test"

READER = """
import pyarrow.parquet as pq


def summarise(path: str) -> dict:
    table = pq.read_table(path)
    return {"count": table.num_rows, "total": sum(table.column("n").to_pylist())}
"""

BIG_PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: sql_artifacts, version: 1.0.0}
spec:
  inputs:
    upto: {type: integer, default: 250}
  nodes:
    - id: big
      task:
        type: sql
        url: "sqlite:///source.db"
        file: queries/numbers.sql
      inputBindings:
        upto: "{{ pipeline.input.upto }}"
    - id: summarise
      task: {type: python, callable: "sqlreader:summarise"}
      inputBindings:
        path: "{{ big.artifact }}"
    - id: copy
      task:
        type: sql
        url: "duckdb:///copy.duckdb"
        query: |
          CREATE TABLE IF NOT EXISTS numbers (n BIGINT, label VARCHAR, day DATE);
        insert: {table: numbers, rows: "{{ big.artifact }}"}
    - id: check_copy
      task:
        type: sql
        url: "duckdb:///copy.duckdb"
        query: SELECT count(*) AS rows_copied, max(n) AS top FROM numbers WHERE label <> :evil
        params: {evil: "'; DROP TABLE numbers; --"}
      startWhen: "event:copy.completed"
  outputs:
    count: "{{ summarise.count }}"
    total: "{{ summarise.total }}"
    schema: "{{ big.schema }}"
    copied: "{{ check_copy.rows }}"
"""

NUMBERS_SQL = """
-- 1..:upto, with a label and a date per row
WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < :upto)
SELECT n, 'row ' || n AS label, date('2024-01-01', '+' || (n % 28) || ' days') AS day FROM c;
"""


def test_a_large_result_goes_through_parquet_to_python_and_sql(tmp_path: Path) -> None:
    (tmp_path / "sqlreader.py").write_text(READER)
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "numbers.sql").write_text(NUMBERS_SQL)
    pipeline = write_pipeline(tmp_path, "sql_artifacts.yaml", BIG_PIPELINE)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"WHENFLOW_SQL_MAX_ROWS": "100", "TMPDIR": str(scratch)}
    # Relative database URLs are relative to the working directory: run from tmp_path.
    proc = run_cli(tmp_path, "--connections", tmp_path / "none.yaml", "run", pipeline, "--json")
    assert proc.returncode == 2  # an explicit connections file must exist
    assert "does not exist" in proc.stderr
    result = _run_in(tmp_path, pipeline, env)
    assert result["status"] == "completed", json.dumps(result["nodes"])[:1500]
    outputs = result["outputs"]
    assert outputs["count"] == 250
    assert outputs["total"] == sum(range(1, 251))
    assert [c["name"] for c in outputs["schema"]] == ["n", "label", "day"]
    assert outputs["copied"] == [{"rows_copied": 250, "top": 250}]
    big = result["nodes"]["big"]["outputs"]
    assert big["rowcount"] == 250
    assert "rows" not in big
    assert big["artifact"]["uri"].endswith("/big/artifact/big.parquet")  # in the store
    assert list(scratch.glob("whenflow-sql-*")) == []  # the hand-over copy was deleted


def _run_in(folder: Path, pipeline: Path, env: dict[str, str]) -> dict[str, object]:
    import subprocess

    from cli_helpers import cli_argv, cli_env

    proc = subprocess.run(
        cli_argv("run", str(pipeline), "--json"),
        cwd=folder,
        env=cli_env(folder, env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_validate_reports_sql_config_problems_with_their_line(tmp_path: Path) -> None:
    pipeline = write_pipeline(
        tmp_path,
        "bad.yaml",
        """
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {name: bad, version: 1.0.0}
        spec:
          nodes:
            - id: nothing
              task: {type: sql, connection: db}
            - id: typo
              task: {type: sql, connection: db, querry: SELECT 1}
            - id: missing_file
              task: {type: sql, connection: db, file: nowhere.sql}
        """,
    )
    proc = run_cli(tmp_path, "validate", pipeline)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert any(
        line.startswith(str(pipeline)) and "give `query` or `file`" in line for line in lines
    ), proc.stderr
    assert "unknown field 'querry'" in proc.stderr
    assert "nowhere.sql" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_connections_list_and_test(tmp_path: Path) -> None:
    database = tmp_path / "local.db"
    sqlite3.connect(database).close()
    file = tmp_path / "connections.yaml"
    file.write_text(
        f"local: sqlite:///{database}\n"
        "api:\n  url: https://user:file-canary-pw@api.example.org/v1\n  apiKey: key-canary-123\n"
    )
    file.chmod(0o600)
    listed = run_json(tmp_path, "--connections", file, "connections", "list")
    assert {c["name"]: c["scheme"] for c in listed} == {"api": "https", "local": "sqlite"}
    plain = run_cli(tmp_path, "--connections", file, "connections", "list")
    for output in (json.dumps(listed), plain.stdout, plain.stderr):
        assert "file-canary-pw" not in output
        assert "key-canary-123" not in output
    assert "https://user:***@api.example.org/v1" in plain.stdout
    tested = run_json(tmp_path, "--connections", file, "connections", "test", "local")
    assert tested["tested"] is True
    assert tested["message"].endswith("SELECT 1 returned 1")
    resolved = run_cli(tmp_path, "--connections", file, "connections", "test", "api")
    assert resolved.returncode == 0
    assert resolved.stdout.startswith("resolved: api:")
    assert "file-canary-pw" not in resolved.stdout
    unknown = run_cli(tmp_path, "--connections", file, "connections", "test", "nope")
    assert unknown.returncode == 1
    assert "connection 'nope' is not defined (defined: api, local)" in unknown.stderr
    file.chmod(0o644)
    refused = run_cli(tmp_path, "--connections", file, "connections", "list")
    assert refused.returncode == 2
    assert "chmod 600" in refused.stderr


@pytest.mark.services
def test_connections_test_reaches_postgresql_and_masks_a_refusal(
    tmp_path: Path, require_service: object
) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)  # type: ignore[operator]
    require_service("MariaDB", "127.0.0.1", 3306)  # type: ignore[operator]
    env = {
        "WHENFLOW_CONN_PG": PG_URL,
        "WHENFLOW_CONN_MARIA": "mariadb://root:wrong-canary-pw@127.0.0.1:3306/test",
    }
    ok = run_json(tmp_path, "connections", "test", "pg", env=env)
    assert ok["message"].startswith("postgresql ")
    refused = run_cli(tmp_path, "connections", "test", "maria", env=env)
    assert refused.returncode == 1
    assert "connection 'maria' failed its test" in refused.stderr
    assert "Access denied" in refused.stderr
    assert "wrong-canary-pw" not in refused.stderr + refused.stdout


CANARY_PW = "pw-canary-" + uuid.uuid4().hex[:8]
CANARY_SECRET = "secret-canary-" + uuid.uuid4().hex[:8]


@pytest.mark.services
def test_a_failing_statement_leaks_no_password_and_no_secret(
    tmp_path: Path, require_service: object
) -> None:
    """PostgreSQL echoes a bad value in its error; the node error shows `***` instead."""
    require_service("PostgreSQL", "127.0.0.1", 5432)  # type: ignore[operator]
    user = os.environ.get("WHENFLOW_TEST_PG_USER", "postgres")
    (tmp_path / "leaky.sql").write_text(f"SELECT CAST('{CANARY_PW}' AS integer) AS n")
    pipeline = write_pipeline(
        tmp_path,
        "leaky.yaml",
        """
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {name: leaky, version: 1.0.0}
        spec:
          nodes:
            - id: by_password
              allowFailure: true
              task: {type: sql, connection: pg, file: leaky.sql}
            - id: by_secret
              allowFailure: true
              task:
                type: sql
                connection: pg
                query: SELECT CAST(:token AS integer) AS n
                params: {token: "{{ secret('TOKEN') }}"}
        """,
    )
    env = {
        # PostgreSQL trusts local connections: the password is sent and ignored.
        "WHENFLOW_CONN_PG": f"postgresql://{user}:{CANARY_PW}@127.0.0.1:5432/test",
        "WHENFLOW_SECRET_TOKEN": CANARY_SECRET,
    }
    proc = run_cli(tmp_path, "run", pipeline, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for node in ("by_password", "by_secret"):
        error = result["nodes"][node]["error"]
        assert error.startswith(f"sql task of node {node!r}: statement 1 of 1"), error
        assert "invalid input syntax for type integer" in error
        assert "***" in error
    seen = [proc.stdout, proc.stderr]
    execution = result["executionId"]
    for command in (["show"], ["events"], ["vars"], ["logs"]):
        shown = run_cli(tmp_path, "executions", *command, execution, "--json", env=env)
        seen += [shown.stdout, shown.stderr]
    conn = connect_db(tmp_path)
    try:
        seen.append("\n".join(conn.iterdump()))
    finally:
        conn.close()
    for text in seen:
        assert CANARY_PW not in text
        assert CANARY_SECRET not in text
