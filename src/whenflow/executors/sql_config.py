"""The `sql` task block, read and checked (docs/yaml-reference.md, `sql`).

    task:
      type: sql
      connection: warehouse          # and/or url: sqlite:///data.db (no password in it),
                                     # used when the connection is not defined
      query: SELECT * FROM t WHERE day = :day     # or file: queries/daily.sql
      params: {day: "{{ pipeline.input.day }}"}   # default: the node's bound inputs
      insert: {table: staging.prices, rows: "{{ fetch.rows }}"}
      output: auto                   # auto | rows | parquet

`query` and `file` are never rendered: values reach the database only as
bound parameters (`:name`). `params` and `insert` are rendered per attempt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from whenflow.domain.connections import CONNECTION_NAME
from whenflow.domain.definitions import TaskSpec
from whenflow.executors.errors import InvalidTaskConfig

TASK_TYPE = "sql"
CONFIG_FIELDS = ("connection", "url", "query", "file", "params", "insert", "output")
INSERT_FIELDS = ("table", "rows")
OUTPUT_MODES = ("auto", "rows", "parquet")
RENDERED_FIELDS = ("params", "insert")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True, slots=True)
class InsertSpec:
    """`insert:` with its table split into schema and name (each an identifier)."""

    table: str
    schema: str | None
    rows: Any
    """A list of objects, or the path of a Parquet file (a Parquet `artifact` output)."""


@dataclass(frozen=True, slots=True)
class SqlConfig:
    """A checked `sql` task: a connection and/or a url (its default), something to run."""

    connection: str | None
    url: str | None
    query: str | None
    query_origin: str
    """`query` or the path of its file, for error messages."""
    params: Mapping[str, Any] | None
    insert: InsertSpec | None
    output: str


def check_config(task: TaskSpec) -> list[str]:
    """Every problem with the block, without touching a database (validate time)."""
    problems: list[str] = []
    read_config(task, problems)
    return problems


def parse_config(task: TaskSpec) -> SqlConfig:
    """The checked config of a task about to run; raises InvalidTaskConfig."""
    problems: list[str] = []
    config = read_config(task, problems)
    if problems or config is None:
        raise InvalidTaskConfig(TASK_TYPE, "; ".join(problems))
    return config


def read_config(task: TaskSpec, problems: list[str]) -> SqlConfig | None:
    """The config, appending each problem found to `problems` (None if it cannot run)."""
    config = task.config
    problems.extend(
        f"sql task: unknown field {key!r}; known fields: {', '.join(CONFIG_FIELDS)}"
        for key in config
        if key not in CONFIG_FIELDS
    )
    connection, url = _target(config, problems)
    query, origin = _query(task, problems)
    params = config.get("params")
    if params is not None and not (
        isinstance(params, Mapping) and all(isinstance(k, str) for k in params)
    ):
        if not _is_template(params):
            problems.append("sql task: `params` must map parameter names to values")
        params = None
    insert = _insert(config.get("insert"), problems)
    if query is None and insert is None and not problems:
        problems.append("sql task: give `query` or `file` (the SQL to run), or `insert`")
    output = config.get("output", "auto")
    if output not in OUTPUT_MODES:
        problems.append(f"sql task: `output` {output!r} is not one of {', '.join(OUTPUT_MODES)}")
    if problems:
        return None
    return SqlConfig(connection, url, query, origin, params, insert, str(output))


def _target(config: Mapping[str, Any], problems: list[str]) -> tuple[str | None, str | None]:
    connection, url = config.get("connection"), config.get("url")
    if connection is None and url is None:
        problems.append(
            "sql task: give `connection` (a name defined by WHENFLOW_CONN_<NAME> or the "
            "connections file) or `url`"
        )
        return None, None
    if connection is not None and (
        not isinstance(connection, str) or not CONNECTION_NAME.match(connection)
    ):
        problems.append(
            f"sql task: `connection` {connection!r} must be a connection name "
            "(letters, digits and _; it is not rendered)"
        )
        return None, None
    if url is None:
        return connection, None
    if not isinstance(url, str) or not url or _is_template(url):
        problems.append("sql task: `url` must be a literal SQLAlchemy URL")
        return None, None
    if urlsplit(url).password is not None:
        problems.append(
            "sql task: `url` holds a password; define a connection instead "
            "(WHENFLOW_CONN_<NAME> or the connections file) and write `connection: NAME`"
        )
        return None, None
    return connection, url


def _query(task: TaskSpec, problems: list[str]) -> tuple[str | None, str]:
    query, file = task.config.get("query"), task.config.get("file")
    if query is not None and file is not None:
        problems.append("sql task: give `query` or `file`, not both")
        return None, ""
    if file is not None:
        if not isinstance(file, str) or not file:
            problems.append("sql task: `file` must be the path of a .sql file")
            return None, ""
        path = sql_file_path(file, task.base_dir)
        try:
            query = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(f"sql task: cannot read `file` {str(path)!r}: {reason}")
            return None, ""
        origin = str(path)
    else:
        origin = "query"
    if query is None:
        return None, origin
    if not isinstance(query, str) or not query.strip():
        problems.append(f"sql task: `{'file' if file else 'query'}` holds no SQL")
        return None, origin
    if "{{" in query or "{%" in query:
        problems.append(
            f"sql task: {origin} contains a template, which is never rendered into SQL; "
            "write :name and pass the value in `params` (or as an input)"
        )
        return None, origin
    return query, origin


def sql_file_path(file: str, base_dir: str | None) -> Path:
    """`file` resolved against the pipeline's folder (the cwd when unknown)."""
    path = Path(file).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def _insert(value: Any, problems: list[str]) -> InsertSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.append("sql task: `insert` must be {table: NAME, rows: ROWS}")
        return None
    problems.extend(
        f"sql task: unknown field insert.{key}; known fields: {', '.join(INSERT_FIELDS)}"
        for key in value
        if key not in INSERT_FIELDS
    )
    table = value.get("table")
    parts = table.split(".") if isinstance(table, str) else []
    if not 1 <= len(parts) <= 2 or not all(IDENTIFIER.match(p) for p in parts):
        problems.append(
            f"sql task: insert.table {table!r} must be a table name, or schema.table "
            "(letters, digits, _ and $; it is not rendered)"
        )
        return None
    if "rows" not in value:
        problems.append('sql task: insert.rows is missing; bind it, e.g. "{{ fetch.rows }}"')
        return None
    schema = parts[0] if len(parts) == 2 else None
    return InsertSpec(table=parts[-1], schema=schema, rows=value["rows"])


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)
