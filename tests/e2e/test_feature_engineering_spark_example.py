"""examples/feature_engineering_spark (seed 004): Spark features loaded with `sql` into SQLite."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import EXAMPLES, cli_argv, cli_env

PIPELINE = EXAMPLES / "feature_engineering_spark" / "pipeline.yaml"


def run_example(workdir: Path, start: str, end: str) -> dict[str, Any]:
    """`whenflow run pipeline.yaml --json` from `workdir`, with WHENFLOW_HOME under it."""
    proc = subprocess.run(
        cli_argv(
            "run", str(PIPELINE), "-i", f"start_date={start}", "-i", f"end_date={end}", "--json"
        ),
        cwd=workdir,
        env=cli_env(workdir / "home"),
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.slow
@pytest.mark.timeout(600)  # a JVM starts
def test_spark_features_are_loaded_into_sqlite(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    result = run_example(tmp_path, "2024-01-01", "2024-01-31")

    assert result["status"] == "completed", result
    # 3 stores x 31 days; 25 of each store's 31 days have a full 7-day window.
    assert result["outputs"] == {"quality": round(75 / 93, 4), "features": 93, "loaded": 93}
    assert result["nodes"]["notify_empty"]["status"] == "skipped"
    ref = result["nodes"]["transform_data"]["outputs"]["features"]
    assert ref["schema"]["num_rows"] == 93
    assert [f["name"] for f in ref["schema"]["fields"]] == [
        "store",
        "day",
        "orders_7d",
        "revenue_7d",
        "complete_window",
    ]

    # Spark's moving average against one computed here from the extracted rows.
    sales_uri = result["nodes"]["extract_data"]["outputs"]["sales"]["uri"]
    sales = pq.read_table(sales_uri.removeprefix("file://")).to_pylist()
    shanghai = [r["orders"] for r in sales if r["store"] == "shanghai"]
    expected_jan_10 = round(sum(shanghai[3:10]) / 7, 2)
    with sqlite3.connect(tmp_path / "features.db") as db:
        count, complete = db.execute(
            "SELECT count(*), sum(complete_window) FROM daily_features"
        ).fetchone()
        jan_10 = db.execute(
            "SELECT orders_7d FROM daily_features WHERE store = 'shanghai' AND day = '2024-01-10'"
        ).fetchone()
    db.close()
    assert (count, complete) == (93, 75)
    assert jan_10 == (expected_jan_10,)


def test_an_empty_range_skips_spark_and_the_load(tmp_path: Path) -> None:
    result = run_example(tmp_path, "2024-02-01", "2024-01-31")

    assert result["status"] == "completed"
    nodes = result["nodes"]
    assert nodes["extract_data"]["outputs"]["row_count"] == 0
    assert nodes["transform_data"]["status"] == "skipped"
    assert nodes["load_features"]["status"] == "skipped"
    assert nodes["notify_empty"]["status"] == "completed"
    assert result["outputs"] == {"quality": None, "features": None, "loaded": None}
    assert not (tmp_path / "features.db").exists()
