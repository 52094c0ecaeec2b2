"""The `spark` executor on a real local Spark (issue 15 item 6).

A JVM starts once for the module (`spark` fixture: the process session the
executor reuses) and stops at its end. The pipelines run in this process
through `whenflow.run`: a python node writes Parquet, Spark transforms it
(a function, then Spark SQL over the result as a view), python reads what
Spark wrote; a failing Spark job ends in a node error naming the node and
Spark's cause.
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import whenflow
from whenflow.executors.errors import InvalidTaskConfig
from whenflow.executors.spark_session import DEFAULT_MASTER, process_session, stop_session

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a JVM starts

JOBS = """
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import functions as F


def events(folder: str) -> dict:
    path = pathlib.Path(folder) / "events.parquet"
    table = pa.table({
        "user": ["ann", "bob", "ann", "cid", "bob", "ann"],
        "clicks": [1, 2, 3, 4, 5, 6],
    })
    pq.write_table(table, path)
    return {"events": path}


def totals(spark, events: str):
    frame = spark.read.parquet(events)
    return frame.groupBy("user").agg(F.sum("clicks").alias("clicks")).repartition(2, "user")


def split(spark, events: str) -> dict:
    frame = spark.read.parquet(events)
    return {"heavy": frame.where("clicks > 3"), "users": frame.select("user").distinct().count()}


def endless(spark) -> dict:
    frame = spark.range(0, 10**13, numPartitions=2).selectExpr("sum(id % 7) AS s")
    return {"s": frame.collect()[0]["s"]}


def read_back(table: str) -> dict:
    rows = pq.read_table(table).to_pylist()
    return {"rows": sorted(rows, key=lambda r: r["user"])}
"""

PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: spark_features, version: 1.0.0}
spec:
  inputs: {work: {type: string, required: true}}
  nodes:
    - id: produce
      task: {type: python, callable: "MODULE:events"}
      inputBindings: {folder: "{{ pipeline.input.work }}"}
    - id: totals
      task: {type: spark, callable: "MODULE:totals"}
      inputBindings: {events: "{{ produce.events }}"}
    - id: busy
      task:
        type: spark
        sql: "SELECT user, clicks FROM totals WHERE clicks >= :least ORDER BY user"
      inputBindings: {totals: "{{ totals.artifact }}", least: 7}
    - id: split
      task: {type: spark, callable: "MODULE:split"}
      inputBindings: {events: "{{ produce.events }}"}
    - id: check
      task: {type: python, callable: "MODULE:read_back"}
      inputBindings: {table: "{{ busy.artifact }}"}
  outputs:
    busy: "{{ check.rows }}"
"""

FAILING = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: spark_failing, version: 1.0.0}
spec:
  inputs: {work: {type: string, required: true}}
  nodes:
    - id: produce
      task: {type: python, callable: "MODULE:events"}
      inputBindings: {folder: "{{ pipeline.input.work }}"}
    - id: broken_query
      task: {type: spark, sql: "SELECT no_such_column FROM events"}
      inputBindings: {events: "{{ produce.events }}"}
"""


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """The process's SparkSession, as the executor starts it, for this module only."""
    session = process_session(
        DEFAULT_MASTER,
        {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"},
    )
    try:
        yield session
    finally:
        stop_session()


def _pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> tuple[Path, Path]:
    module = f"sparkjobs_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(JOBS))
    monkeypatch.syspath_prepend(str(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    path = tmp_path / "pipeline.yaml"
    path.write_text(body.replace("MODULE", module))
    return path, work


def test_python_to_spark_to_python_through_parquet_artifacts(
    spark: Any, tmp_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, work = _pipeline(tmp_path, monkeypatch, PIPELINE)

    result = whenflow.run(path, {"work": str(work)})

    assert result["status"] == "completed", result["error"]
    assert result["outputs"]["busy"] == [
        {"user": "ann", "clicks": 10},
        {"user": "bob", "clicks": 7},
    ]
    totals = result["nodes"]["totals"]["outputs"]
    assert totals["rowcount"] == 3
    assert totals["schema"] == {
        "type": "struct",
        "fields": [
            {"name": "user", "type": "string", "nullable": True, "metadata": {}},
            {"name": "clicks", "type": "long", "nullable": True, "metadata": {}},
        ],
    }
    artifact = totals["artifact"]  # two partitions, joined into one Parquet file
    assert artifact["uri"].endswith("/totals/artifact/artifact.parquet")
    assert artifact["content_type"] == "application/vnd.apache.parquet"
    assert artifact["schema"]["num_rows"] == 3
    assert [f["name"] for f in artifact["schema"]["fields"]] == ["user", "clicks"]
    split = result["nodes"]["split"]["outputs"]
    assert split["users"] == 3
    assert split["heavy"]["schema"]["num_rows"] == 3
    assert split["heavy"]["uri"].endswith("/split/heavy/heavy.parquet")
    assert result["nodes"]["busy"]["outputs"]["rowcount"] == 2


def test_spark_tables_pass_through_artifacts_on_s3(
    spark: Any,
    tmp_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_server: Any,
    s3_bucket: str,
) -> None:
    path, work = _pipeline(tmp_path, monkeypatch, PIPELINE)
    monkeypatch.setenv("WHENFLOW_ARTIFACTS_URL", f"s3://{s3_bucket}/runs")
    monkeypatch.setenv("WHENFLOW_ARTIFACTS_CONNECTION", "minio")
    monkeypatch.setenv("WHENFLOW_CONN_MINIO", s3_server.connection_url)

    result = whenflow.run(path, {"work": str(work)})

    assert result["status"] == "completed", result["error"]
    assert result["outputs"]["busy"] == [
        {"user": "ann", "clicks": 10},
        {"user": "bob", "clicks": 7},
    ]
    artifact = result["nodes"]["busy"]["outputs"]["artifact"]
    assert artifact["uri"].startswith(f"s3://{s3_bucket}/runs/{result['executionId']}/busy/")
    assert artifact["schema"]["num_rows"] == 2
    assert s3_server.filesystem().size(artifact["uri"]) == artifact["size"]


def test_a_failing_spark_job_names_the_node_and_the_cause(
    spark: Any, tmp_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, work = _pipeline(tmp_path, monkeypatch, FAILING)

    result = whenflow.run(path, {"work": str(work)})

    assert result["status"] == "failed"
    node = result["nodes"]["broken_query"]
    assert node["status"] == "failed"
    error = node["error"]
    assert "the Spark job of node 'broken_query' failed: AnalysisException" in error
    assert "`no_such_column` cannot be resolved" in error
    assert "\tat org.apache" not in error  # the JVM stack trace stays in the task log


ENDLESS = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: spark_endless, version: 1.0.0}
spec:
  nodes:
    - id: forever
      timeout: 5s
      task: {type: spark, callable: "MODULE:endless"}
"""


def test_a_timed_out_attempt_cancels_its_spark_jobs(
    spark: Any, tmp_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _pipeline(tmp_path, monkeypatch, ENDLESS)

    result = whenflow.run(path)

    assert result["nodes"]["forever"]["status"] == "failed"
    assert result["nodes"]["forever"]["error"] == "node 'forever' timed out after 5s"
    tracker = spark.sparkContext.statusTracker()
    deadline = time.monotonic() + 60
    while tracker.getActiveJobsIds() and time.monotonic() < deadline:
        threading.Event().wait(0.2)  # Spark's own threads end the job: poll its tracker
    assert tracker.getActiveJobsIds() == []


def test_one_master_per_process(spark: Any) -> None:
    with pytest.raises(InvalidTaskConfig, match=r"runs on master 'local\[\*\]'"):
        process_session("local[1]")
    assert process_session(DEFAULT_MASTER) is spark
