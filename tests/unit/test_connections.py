"""Connections: variables over the connections file, masking, listing (DESIGN.md §13)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from whenflow.domain.connections import Connection, UnknownConnection
from whenflow.executors.subprocess_io import task_environment
from whenflow.services.connections import list_connections, redacted_url, seed_mask
from whenflow.services.pipelines import load_program
from whenflow.storage.connections import (
    ConnectionsFileError,
    EnvironmentConnections,
    FileConnections,
    LayeredConnections,
    connections_file,
    resolver,
)

FILE = """
    warehouse:
      url: postgresql://etl:file-secret-pw@db.internal:5432/dw
      sslmode: require
    deepseek:
      url: https://api.deepseek.com
      apiKey: sk-canary-api-key
    Scratch: sqlite:///scratch.db
"""


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def test_the_file_defines_urls_and_extras(tmp_path: Path) -> None:
    found = FileConnections(write(tmp_path / "c.yaml", FILE))
    assert found.names() == ["deepseek", "scratch", "warehouse"]
    warehouse = found.get("WAREHOUSE")
    assert (warehouse.scheme, warehouse.host, warehouse.port) == ("postgresql", "db.internal", 5432)
    assert warehouse.password == "file-secret-pw"
    assert warehouse.extra == {"sslmode": "require"}
    assert found.get("deepseek").secrets() == ["sk-canary-api-key"]
    assert found.get("scratch").url == "sqlite:///scratch.db"


def test_a_variable_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", FILE)
    layered = LayeredConnections(
        EnvironmentConnections({"WHENFLOW_CONN_WAREHOUSE": "mysql://u@env-host/db"}),
        FileConnections(path),
    )
    assert layered.get("warehouse").host == "env-host"
    assert layered.origin("warehouse") == "$WHENFLOW_CONN_WAREHOUSE"
    assert layered.get("deepseek").host == "api.deepseek.com"
    assert layered.origin("deepseek") == str(path)
    with pytest.raises(UnknownConnection) as caught:
        layered.get("nope")
    assert "WHENFLOW_CONN_NOPE" in str(caught.value)
    assert "defined: deepseek, scratch, warehouse" in str(caught.value)


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", FILE, mode=0o644)
    with pytest.raises(ConnectionsFileError, match=r"mode is 0644; run `chmod 600"):
        FileConnections(path).names()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("warehouse: [unclosed\n", r"c.yaml:\d+:\d+: "),
        ("- a\n- b\n", "maps names to a URL"),
        ("bad-name: sqlite://\n", "'bad-name' is not a connection name"),
        ("w: {user: x}\n", "connection 'w' needs a url"),
        ("w: a://b\nW: c://d\n", "defined twice"),
    ],
)
def test_a_bad_file_says_where_and_what(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConnectionsFileError, match=message):
        FileConnections(write(tmp_path / "c.yaml", text)).names()


def test_which_file_is_read(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert connections_file(None, {"WHENFLOW_HOME": str(home)}) is None
    default = write(home / "connections.yaml", FILE)
    assert connections_file(None, {"WHENFLOW_HOME": str(home)}) == default
    other = write(tmp_path / "other.yaml", "x: sqlite://\n")
    env = {"WHENFLOW_HOME": str(home), "WHENFLOW_CONNECTIONS_FILE": str(other)}
    assert connections_file(None, env) == other
    assert connections_file(str(default), env) == default
    with pytest.raises(ConnectionsFileError, match=r"WHENFLOW_CONNECTIONS_FILE: .* does not exist"):
        connections_file(None, {"WHENFLOW_CONNECTIONS_FILE": str(tmp_path / "missing.yaml")})
    # The resolver defers all of it to the first look-up.
    lazy = resolver(str(tmp_path / "missing.yaml"), {})
    with pytest.raises(ConnectionsFileError):
        lazy.names()


def test_secrets_include_the_encoded_password() -> None:
    connection = Connection("x", "postgresql://u:p%40ss%2Fword@h/db", {"token": "tok-12345"})
    assert connection.secrets() == ["p@ss/word", "p%40ss%2Fword", "tok-12345"]
    shown = redacted_url(connection)
    assert shown == "postgresql://u:***@h/db"


def test_listing_never_shows_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHENFLOW_CONN_ENVDB", "mysql://root:env-secret-pw@127.0.0.1:3306/test")
    views = list_connections(
        LayeredConnections(
            EnvironmentConnections(), FileConnections(write(tmp_path / "c.yaml", FILE))
        )
    )
    text = repr([v.to_json() for v in views])
    for secret in ("env-secret-pw", "file-secret-pw", "sk-canary-api-key"):
        assert secret not in text
    by_name = {v.name: v for v in views}
    assert by_name["envdb"].url == "mysql://root:***@127.0.0.1:3306/test"
    assert by_name["deepseek"].extra_keys == ("apiKey",)


def test_the_mask_is_seeded_with_the_connections_a_pipeline_uses(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        textwrap.dedent(
            """
            apiVersion: whenflow/v1
            kind: Pipeline
            metadata: {name: p, version: 1.0.0}
            spec:
              nodes:
                - id: q
                  task: {type: sql, connection: warehouse, query: SELECT 1}
            """
        )
    )
    program = load_program(pipeline)
    connections = LayeredConnections(
        EnvironmentConnections({}), FileConnections(write(tmp_path / "c.yaml", FILE))
    )
    mask = seed_mask(program, connections)
    assert mask.text("login failed for file-secret-pw") == "login failed for ***"
    assert mask.text("sk-canary-api-key") == "sk-canary-api-key"  # deepseek is not used


def test_task_subprocesses_get_no_connection_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHENFLOW_CONN_HIDDEN", "postgresql://u:pw@h/db")
    assert "WHENFLOW_CONN_HIDDEN" not in task_environment()


def test_secrets_in_the_query_string_are_secrets() -> None:
    """libpq's `?password=` and S3's `?session_token=` are masked like the URL's password."""
    database = Connection("pgq", "postgresql://u@h:5432/db?sslmode=require&password=hunt%40er2")
    assert "hunt@er2" in database.secrets()
    assert redacted_url(database) == "postgresql://u@h:5432/db?sslmode=require&password=***"
    s3 = Connection("s3t", "s3://AKIAX:sEcReTkEy@?session_token=TOKENsecret123&region=eu-west-1")
    assert redacted_url(s3) == "s3://AKIAX:***@?session_token=***&region=eu-west-1"
    extra = Connection("m", "http://k@127.0.0.1:9000", {"session_token": "TOKENfromextra"})
    assert "TOKENfromextra" in extra.secrets()


def test_a_malformed_url_is_a_settings_error_that_hides_the_password(tmp_path: Path) -> None:
    """Not a ValueError traceback out of `whenflow connections list` or a task."""
    hosts = "spark://u:pw-canary-1@h1:7077,h2:7077"  # Spark's HA masters: no single port
    (view,) = list_connections(
        LayeredConnections(EnvironmentConnections({"WHENFLOW_CONN_HA": hosts}))
    )
    assert view.url == "spark://u:***@h1:7077,h2:7077"
    env = EnvironmentConnections({"WHENFLOW_CONN_BAD": "http://u:pw-canary-1@[::1/x"})
    with pytest.raises(ConnectionsFileError, match="WHENFLOW_CONN_BAD") as raised:
        list_connections(LayeredConnections(env))
    assert "pw-canary-1" not in str(raised.value)
    path = write(tmp_path / "c.yaml", "broken: http://u:pw-canary-2@[::1/x\n")
    with pytest.raises(ConnectionsFileError, match="'broken'") as raised:
        FileConnections(path).get("broken")
    assert "pw-canary-2" not in str(raised.value)
