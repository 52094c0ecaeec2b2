"""What `whenflow validate` says about a `sql` task block (executors/sql_config.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from whenflow.domain.definitions import TaskSpec
from whenflow.executors.sql_config import check_config, parse_config


def problems(base_dir: Path | None = None, **config: Any) -> list[str]:
    return check_config(
        TaskSpec("sql", config, base_dir=str(base_dir) if base_dir is not None else None)
    )


def test_a_good_block_has_no_problem(tmp_path: Path) -> None:
    (tmp_path / "q.sql").write_text("SELECT 1;")
    assert problems(connection="db", query="SELECT :a", params={"a": "{{ x.y }}"}) == []
    assert problems(tmp_path, connection="db", file="q.sql") == []
    assert problems(url="sqlite:///x.db", insert={"table": "s.t", "rows": "{{ a.rows }}"}) == []
    assert problems(connection="market", url="sqlite:///m.db", query="SELECT 1") == []
    assert (
        parse_config(
            TaskSpec("sql", {"connection": "db", "file": "q.sql"}, base_dir=str(tmp_path))
        ).query
        == "SELECT 1;"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"connection": "db", "query": "SELECT 1", "querry": 1}, "unknown field 'querry'"),
        ({"connection": "db"}, "give `query` or `file`"),
        ({"query": "SELECT 1"}, "give `connection`"),
        ({"connection": "{{ x }}", "query": "SELECT 1"}, "must be a connection name"),
        ({"url": "postgresql://u:pw@h/db", "query": "SELECT 1"}, "`url` holds a password"),
        ({"connection": "db", "query": "SELECT 1", "file": "a.sql"}, "not both"),
        ({"connection": "db", "file": "missing.sql"}, "cannot read `file`"),
        ({"connection": "db", "query": "SELECT '{{ x }}'"}, "never rendered into SQL"),
        ({"connection": "db", "query": "  "}, "holds no SQL"),
        ({"connection": "db", "query": "SELECT 1", "params": [1]}, "`params` must map"),
        ({"connection": "db", "insert": {"table": "x; DROP", "rows": []}}, "insert.table"),
        ({"connection": "db", "insert": {"table": "{{ t }}", "rows": []}}, "insert.table"),
        ({"connection": "db", "insert": {"table": "a.b.c", "rows": []}}, "insert.table"),
        ({"connection": "db", "insert": {"table": "t"}}, "insert.rows is missing"),
        ({"connection": "db", "insert": {"table": "t", "rows": [], "x": 1}}, "insert.x"),
        ({"connection": "db", "query": "SELECT 1", "output": "csv"}, "`output` 'csv'"),
    ],
)
def test_each_problem_is_named(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    found = problems(tmp_path, **config)
    assert any(message in p for p in found), found


def test_a_relative_file_is_read_beside_the_pipeline(tmp_path: Path) -> None:
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / "daily.sql").write_text("SELECT :day")
    assert problems(tmp_path, connection="db", file="queries/daily.sql") == []
    found = problems(tmp_path / "queries", connection="db", file="queries/daily.sql")
    assert "queries/queries/daily.sql" in found[0]
