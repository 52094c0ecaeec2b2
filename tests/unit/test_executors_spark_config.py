"""The spark executor's parts that need no JVM: config checks, the master, inputs as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from whenflow.domain.definitions import TaskSpec
from whenflow.executors.errors import InvalidTaskConfig
from whenflow.executors.spark import SparkExecutor
from whenflow.executors.spark_tables import is_table, split_inputs
from whenflow.storage.connections import EnvironmentConnections


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"sql": "SELECT 1"}, []),
        ({"callable": "json:dumps", "master": "local[2]"}, []),
        ({}, ["spark task: give exactly one of `callable` and `sql`"]),
        (
            {"sql": "SELECT 1", "callable": "json:dumps"},
            ["spark task: give exactly one of `callable` and `sql`"],
        ),
        (
            {"sql": "SELECT 1", "master": "local", "connection": "c"},
            ["spark task: give `master` or `connection`, not both"],
        ),
        ({"sql": ""}, ["spark task: `sql` must be a non-empty string"]),
        (
            {"sql": "SELECT 1", "query": "x"},
            ["spark task: unknown field 'query'; known fields: callable, sql, master, connection"],
        ),
    ],
)
def test_config_checks(config: dict[str, Any], expected: list[str]) -> None:
    assert SparkExecutor().check(TaskSpec("spark", config)) == expected


def test_a_callable_that_cannot_be_imported_is_reported_as_a_spark_problem() -> None:
    problems = SparkExecutor().check(TaskSpec("spark", {"callable": "no_such_mod_i15:f"}))
    assert len(problems) == 1
    assert problems[0].startswith("spark task: callable 'no_such_mod_i15:f': no module named")


def test_the_master_comes_from_the_task_a_connection_or_the_default() -> None:
    connections = EnvironmentConnections(
        {"WHENFLOW_CONN_CLUSTER": "spark://spark-master:7077?spark.executor.memory=2g"}
    )
    executor = SparkExecutor(connections=connections, conf={"spark.ui.enabled": "false"})

    def master(**config: Any) -> tuple[str, dict[str, str]]:
        return executor._master(TaskSpec("spark", {"sql": "SELECT 1", **config}))

    assert master() == ("local[*]", {"spark.ui.enabled": "false"})
    assert master(master="local[2]") == ("local[2]", {"spark.ui.enabled": "false"})
    assert master(connection="cluster") == (
        "spark://spark-master:7077",
        {"spark.ui.enabled": "false", "spark.executor.memory": "2g"},
    )
    with pytest.raises(InvalidTaskConfig, match="connection 'nowhere' is not defined"):
        master(connection="nowhere")
    with pytest.raises(InvalidTaskConfig, match="no connections configured"):
        SparkExecutor()._master(TaskSpec("spark", {"sql": "x", "connection": "cluster"}))


def test_parquet_inputs_are_tables_and_the_others_parameters(tmp_path: Path) -> None:
    table = tmp_path / "events.parquet"
    pq.write_table(pa.table({"a": [1]}), table)
    folder = tmp_path / "spark-output"
    folder.mkdir()
    pq.write_table(pa.table({"a": [2]}), folder / "part-0.parquet")
    text = tmp_path / "notes.txt"
    text.write_text("PAR")

    assert is_table(str(table))
    assert is_table(folder)
    assert not is_table(str(text))
    assert not is_table("not a path at all")
    assert not is_table("")
    tables, parameters = split_inputs(
        {"events": str(table), "more": str(folder), "least": 3, "label": str(text), "x": None}
    )
    assert tables == {"events": str(table), "more": str(folder)}
    assert parameters == {"least": 3, "label": str(text), "x": None}


def test_inputs_spark_sql_cannot_take_are_refused_with_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(InvalidTaskConfig, match=r"input 'rows' is a list: Spark SQL reads"):
        split_inputs({"rows": [1, 2]})
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1]}), table)
    with pytest.raises(InvalidTaskConfig, match="not a valid view name"):
        split_inputs({"my-table": str(table)})
