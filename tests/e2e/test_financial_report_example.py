"""examples/financial_report (seed 000) end to end through the real CLI.

(a) Embedded defaults, run from a folder that is not the repository: the
bundled files, a SQLite market.db in the working directory, the analysis
branch skipped by its startWhen. (b) The full setup: the sample server over
HTTP, MariaDB through WHENFLOW_CONN_MARKET_DB, the loopback LLM through
WHENFLOW_CONN_MARKET_LLM, and the report in S3 (moto).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import EXAMPLES, REPO_ROOT, cli_argv, cli_env

from loopback_http import serve

PIPELINE = EXAMPLES / "financial_report" / "pipeline.yaml"
STOCK_ROWS = 8 * 4 * 5  # 8 markets x 4 periods, 5 stocks a page
SECTOR_ROWS = 3 * (6 + 5 + 5)  # 3 periods of 6 industries, 5 concepts, 5 regions
LLM_KEY = "sk-financial-" + uuid.uuid4().hex[:10]
REPORT_NAME = re.compile(r"^\d{8}T\d{6}Z_report\.json$")


def run_example(
    workdir: Path, home: Path, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """`whenflow run pipeline.yaml ARGS --json` with `workdir` as the working directory."""
    proc = subprocess.run(
        cli_argv("run", str(PIPELINE), *args, "--json"),
        cwd=workdir,
        env=cli_env(home, env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_embedded_defaults_store_in_sqlite_and_skip_the_analysis(tmp_path: Path) -> None:
    workdir, home = tmp_path / "work", tmp_path / "home"
    workdir.mkdir()
    result = run_example(workdir, home)

    assert result["status"] == "completed"
    nodes = result["nodes"]
    assert result["outputs"] == {
        "stock_rows": STOCK_ROWS,
        "sector_rows": SECTOR_ROWS,
        "report": None,
    }
    for skipped in ("fetch_stock", "fetch_sector"):
        assert nodes[skipped]["status"] == "skipped"
    assert nodes["collect_stock"]["outputs"]["groups"] == 32
    assert nodes["collect_sector"]["outputs"]["groups"] == 9
    assert nodes["analyse"]["status"] == "skipped"
    assert nodes["analyse"]["attempts"] == 0
    assert nodes["save_report"]["status"] == "skipped"

    with sqlite3.connect(workdir / "market.db") as db:
        stock = db.execute(
            "SELECT count(*), count(DISTINCT market || period) FROM stock_flows WHERE batch = ?",
            (result["executionId"],),
        ).fetchone()
        sector = db.execute(
            "SELECT count(*), count(DISTINCT kind || period), max(sector = '半导体') "
            "FROM sector_flows WHERE batch = ?",
            (result["executionId"],),
        ).fetchone()
    db.close()
    assert stock == (STOCK_ROWS, 32)
    assert sector == (SECTOR_ROWS, 9, 1)

    # The reason says which input decides it, in the events and in `executions show`.
    shown = subprocess.run(
        cli_argv("executions", "events", result["executionId"], "--json"),
        cwd=workdir,
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    skips = {
        e["eventType"]: e["payload"]["reason"]
        for e in json.loads(shown.stdout)
        if e["eventType"].endswith(".skipped")
    }
    assert skips["analyse.skipped"] == (
        "startWhen is false: {{ pipeline.input.llm_analysis }} is false"
    )
    assert "event:analyse.completed can no longer happen" in skips["save_report.skipped"]


@contextmanager
def sample_server() -> Iterator[str]:
    """`python -m examples.financial_report.sample_server --port 0`, as the docs run it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.financial_report.sample_server", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    found: dict[str, str] = {}
    ready = threading.Event()

    def read_first_line() -> None:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
        if match:
            found["url"] = match.group(0)
        ready.set()

    reader = threading.Thread(target=read_first_line, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "the sample server said nothing"
        assert "url" in found, "the sample server did not start"
        yield found["url"]
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(5)
        proc.stdout.close()


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh utf8mb4 database on the local MariaDB; yields its name, drops it afterwards."""
    import sqlalchemy as sa

    name = "w2ex_market_" + uuid.uuid4().hex[:8]
    engine = sa.create_engine("mysql+pymysql://root@127.0.0.1:3306/test")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()


def mariadb_counts(database: str, batch: str) -> tuple[int, int, int]:
    """(stock rows, sector rows, rows naming 贵州茅台) of one batch, read back with PyMySQL."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4")
    try:
        with engine.connect() as conn:
            stock = conn.execute(
                sa.text("SELECT count(*) FROM stock_flows WHERE batch = :b"), {"b": batch}
            ).scalar_one()
            sector = conn.execute(
                sa.text("SELECT count(*) FROM sector_flows WHERE batch = :b"), {"b": batch}
            ).scalar_one()
            moutai = conn.execute(
                sa.text("SELECT count(*) FROM stock_flows WHERE batch = :b AND name = '贵州茅台'"),
                {"b": batch},
            ).scalar_one()
    finally:
        engine.dispose()
    return int(stock), int(sector), int(moutai)


@pytest.mark.services
def test_over_http_into_mariadb_with_the_llm_report_in_s3(
    tmp_path: Path, require_service: Any, s3_server: Any, s3_bucket: str
) -> None:
    require_service("MariaDB", "127.0.0.1", 3306)
    workdir, home = tmp_path / "work", tmp_path / "home"
    workdir.mkdir()
    with sample_server() as source, serve(api_key=LLM_KEY) as llm, mariadb_database() as db:
        env = {
            "WHENFLOW_CONN_MARKET_DB": f"mariadb://root@127.0.0.1:3306/{db}?charset=utf8mb4",
            "WHENFLOW_CONN_MARKET_LLM": f"{llm.url.replace('://', f'://:{LLM_KEY}@')}/v1",
            "WHENFLOW_ARTIFACTS_URL": f"s3://{s3_bucket}/whenflow",
            "WHENFLOW_ARTIFACTS_CONNECTION": "minio",
            "WHENFLOW_CONN_MINIO": s3_server.connection_url,
        }
        args = ("-i", f"source_url={source}", "-i", "llm_analysis=true", "-i", "llm_model=echo")
        result = run_example(workdir, home, *args, env=env)
        stock, sector, moutai = mariadb_counts(db, result["executionId"])
        requests = list(llm.requests)
        prompts = [r["json"]["messages"][-1]["content"] for r in requests]

    assert result["status"] == "completed", result
    nodes = result["nodes"]
    assert len(nodes["fetch_stock"]["outputs"]["results"]) == 32
    assert len(nodes["fetch_sector"]["outputs"]["results"]) == 9
    assert (stock, sector) == (STOCK_ROWS, SECTOR_ROWS)
    assert moutai > 0  # Chinese names survive the round trip through MariaDB
    assert not (workdir / "market.db").exists()

    # One LLM call, its prompt built from the collected top inflows.
    assert len(prompts) == 1
    top_sector = nodes["collect_sector"]["outputs"]["top"][0]["sector"]
    assert "32 stock groups and 9 sector groups" in prompts[0]
    assert top_sector in prompts[0]

    name = result["outputs"]["report"]
    assert REPORT_NAME.match(name), name
    ref = nodes["save_report"]["outputs"]["analysis_reports"]
    assert ref["uri"] == (
        f"s3://{s3_bucket}/whenflow/{result['executionId']}/save_report/analysis_reports/{name}"
    )
    report = json.loads(s3_server.filesystem().cat(ref["uri"]).decode("utf-8"))
    assert report["batch"] == result["executionId"]
    assert report["model"] == "echo-loopback"
    assert (report["stock_rows"], report["sector_rows"]) == (STOCK_ROWS, SECTOR_ROWS)
    assert top_sector in report["analysis"]  # the echo model answers with the prompt
    assert report["usage"]["total_tokens"] > 0
    # The LLM key of the connection URL reached the server and nothing whenflow wrote.
    assert {r["headers"].get("authorization") for r in requests} == {f"Bearer {LLM_KEY}"}
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert LLM_KEY.encode() not in path.read_bytes(), path
    assert LLM_KEY not in json.dumps(result) + json.dumps(report)
