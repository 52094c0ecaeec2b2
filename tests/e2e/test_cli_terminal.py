"""Terminal papercuts and bad settings through the real CLI (issue 13 items 4 and 12).

Ids are whole and abbreviable, text prints as itself, `--json` is strict JSON,
an interruption names the real id, the two ways of giving inputs agree, and a
bad setting or inputs file is one line that says what to fix (exit 2).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    EXAMPLES,
    REPO_ROOT,
    cli_argv,
    cli_env,
    connect_db,
    run_cli,
    run_json,
    write_pipeline,
)

TASKS = """
import math


def odd_numbers(city: str) -> dict:
    return {
        "nan": math.nan,
        "inf": math.inf,
        "neg": -math.inf,
        "mixed": [1.5, math.nan, {"deep": math.inf}],
        "city": city,
        "greeting": "你好，" + city,
    }
"""

ODD = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: odd, version: 1.0.0, description: 数据管道}
spec:
  inputs:
    city: {type: string, required: true}
  nodes:
    - id: numbers
      task: {type: python, callable: "oddtasks:odd_numbers"}
      inputBindings: {city: "{{ pipeline.input.city }}"}
  outputs:
    greeting: "{{ numbers.greeting }}"
    nan: "{{ numbers.nan }}"
"""

TEXT_INPUT = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: text_input, version: 1.0.0}
spec:
  inputs:
    code: {type: string, required: true}
  nodes:
    - id: echo
      task: {type: noop}
      inputBindings: {code: "{{ pipeline.input.code }}"}
  outputs:
    code: "{{ echo.code }}"
"""

SLOW = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: slow, version: 1.0.0}
spec:
  nodes:
    - id: slow
      task: {type: shell, command: ["sleep", "60"]}
"""


def _strict(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity (not JSON)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _odd_pipeline(tmp_path: Path) -> Path:
    (tmp_path / "oddtasks.py").write_text(TASKS)
    return write_pipeline(tmp_path, "odd.yaml", ODD)


def test_json_is_strict_and_text_prints_as_itself(tmp_path: Path) -> None:
    pipeline = _odd_pipeline(tmp_path)

    proc = run_cli(tmp_path, "run", pipeline, "-i", "city=上海", "--json")

    assert proc.returncode == 0, proc.stderr
    assert "\\u" not in proc.stdout
    assert "你好，上海" in proc.stdout
    result = _strict(proc.stdout)
    outputs = result["nodes"]["numbers"]["outputs"]
    assert (outputs["nan"], outputs["inf"], outputs["neg"]) == (None, None, None)
    assert outputs["mixed"] == [1.5, None, {"deep": None}]
    assert result["outputs"] == {"greeting": "你好，上海", "nan": None}
    eid = result["executionId"]
    for command in (["executions", "show"], ["executions", "vars"], ["executions", "events"]):
        shown = run_cli(tmp_path, *command, eid, "--json")
        assert shown.returncode == 0, shown.stderr
        assert "\\u" not in shown.stdout
        assert "上海" in shown.stdout
        _strict(shown.stdout)
    plain_vars = run_cli(tmp_path, "executions", "vars", eid)
    assert 'numbers.greeting (string) = "你好，上海"' in plain_vars.stdout
    plain_events = run_cli(tmp_path, "executions", "events", eid)
    assert '{"inputs": {"city": "上海"}}' in plain_events.stdout


def test_run_without_json_prints_outputs_as_text(tmp_path: Path) -> None:
    pipeline = _odd_pipeline(tmp_path)

    proc = run_cli(tmp_path, "run", pipeline, "-i", "city=北京")

    assert proc.returncode == 0, proc.stderr
    assert '"greeting": "你好，北京"' in proc.stdout
    assert '"nan": null' in proc.stdout
    assert "\\u" not in proc.stdout


def _two_executions(home: Path) -> tuple[str, str]:
    first = run_json(home, "run", EXAMPLES / "branch_and_join.yaml", "-i", "amount=1")
    second = run_json(home, "run", EXAMPLES / "branch_and_join.yaml", "-i", "amount=5000")
    return str(first["executionId"]), str(second["executionId"])


def test_executions_list_keeps_ids_whole_at_80_columns(tmp_path: Path) -> None:
    ids = _two_executions(tmp_path)

    for columns in ("80", "40"):
        proc = run_cli(tmp_path, "executions", "list", env={"COLUMNS": columns})
        assert proc.returncode == 0, proc.stderr
        listed = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
        assert sorted(listed) == sorted(ids)
        assert "…" not in proc.stdout


def _copy_execution(home: Path, source_id: str, new_id: str) -> None:
    """A second execution row whose id shares a prefix with `source_id`."""
    conn = connect_db(home)
    try:
        row = dict(conn.execute("SELECT * FROM executions WHERE id = ?", (source_id,)).fetchone())
        row["id"] = new_id
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO executions ({names}) VALUES ({marks})", tuple(row.values()))
        conn.commit()
    finally:
        conn.close()


def test_every_command_accepts_a_unique_id_prefix(tmp_path: Path) -> None:
    first, second = _two_executions(tmp_path)
    prefix = first[:8]

    shown = run_json(tmp_path, "executions", "show", prefix)
    assert shown["executionId"] == first
    for command in (["executions", "events"], ["executions", "vars"], ["executions", "logs"]):
        proc = run_cli(tmp_path, *command, prefix, "--json")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == run_cli(tmp_path, *command, first, "--json").stdout
    assert run_json(tmp_path, "resume", prefix)["executionId"] == first
    assert run_json(tmp_path, "run", "--resume", second[:5])["executionId"] == second


def test_an_ambiguous_or_unknown_prefix_is_a_clear_error(tmp_path: Path) -> None:
    first, _ = _two_executions(tmp_path)
    twin = first[:8] + "-ffff-4fff-bfff-ffffffffffff"
    _copy_execution(tmp_path, first, twin)

    for args in (
        ["executions", "show", first[:8]],
        ["resume", first[:6]],
        ["approve", first[:8], "review"],
        ["executions", "cancel", first[:8]],
    ):
        proc = run_cli(tmp_path, *args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "ambiguous" in proc.stderr
        assert first in proc.stderr
        assert twin in proc.stderr
        assert "Traceback" not in proc.stderr
    # A whole id is never ambiguous.
    assert run_json(tmp_path, "executions", "show", first)["executionId"] == first
    unknown = run_cli(tmp_path, "executions", "show", "0000zz")
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "error: no execution '0000zz'; `whenflow executions list` shows the known ones\n"
    )


def test_interrupt_names_the_real_execution_id(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, "slow.yaml", SLOW)
    proc = subprocess.Popen(
        cli_argv("run", str(pipeline)),
        cwd=REPO_ROOT,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[1] == "execution"
        eid = first[2]
        for line in proc.stdout:
            if "slow started" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130
    assert f"whenflow resume {eid}" in err
    assert "<execution id>" not in err
    assert run_json(tmp_path, "executions", "show", eid)["executionId"] == eid


TALKATIVE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: talkative, version: 1.0.0}
spec:
  nodes:
    - id: talk
      task:
        type: shell
        script: |
          while [ ! -e "$GO" ]; do sleep 0.05; done  # until the reader has gone
          for i in $(seq 1 200); do echo "line $i"; done
          echo "said=200" >> "$WF_OUTPUTS"
    - id: after
      task: {type: noop}
      inputBindings: {said: "{{ talk.said }}"}
"""


def test_progress_that_nobody_reads_any_more_never_fails_a_task(tmp_path: Path) -> None:
    """`whenflow run p.yaml | head -1`: the task's log lines meet a closed pipe."""
    pipeline = write_pipeline(tmp_path, "talkative.yaml", TALKATIVE)
    go = tmp_path / "go"
    stderr = (tmp_path / "stderr").open("w")
    proc = subprocess.Popen(
        cli_argv("run", str(pipeline)),
        cwd=REPO_ROOT,
        env=cli_env(tmp_path, {"GO": str(go)}),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[1] == "execution", first
        eid = first[2]
        proc.stdout.close()  # what `head -1` does once it has its line
        go.touch()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()

    shown = run_json(tmp_path, "executions", "show", eid)
    assert shown["status"] == "completed", shown
    assert shown["nodes"]["talk"]["status"] == "completed", shown["nodes"]["talk"]
    logs = run_json(tmp_path, "executions", "logs", eid, "--node", "talk")
    assert [line["message"] for line in logs if line["stream"] == "stdout"][-1] == "line 200"


@pytest.mark.parametrize(
    ("name", "content"),
    [("inputs.json", '{"code": 456}'), ("inputs.yaml", "code: 456\n"), ("i.yaml", "code: 4.5\n")],
)
def test_inputs_file_and_pairs_coerce_a_number_into_a_string_alike(
    tmp_path: Path, name: str, content: str
) -> None:
    pipeline = write_pipeline(tmp_path, "text_input.yaml", TEXT_INPUT)
    inputs = tmp_path / name
    inputs.write_text(content)
    value = content.rstrip("}\n").split(":")[1].strip()

    from_file = run_json(tmp_path, "run", pipeline, "--inputs-file", inputs)
    from_pair = run_json(tmp_path, "run", pipeline, "-i", f"code={value}")

    assert from_file["outputs"] == {"code": value}
    assert from_pair["outputs"] == from_file["outputs"]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("inputs.json", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "not UTF-8 text"),
        ("inputs.yaml", bytes(range(256)), "not UTF-8 text"),
        ("inputs.yaml", b"amount: [1, 2\n", "not valid JSON/YAML"),
        ("inputs.json", b'{"amount": }', "not valid JSON/YAML"),
    ],
)
def test_a_bad_inputs_file_is_one_line_and_exit_2(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    inputs = tmp_path / name
    inputs.write_bytes(content)

    proc = run_cli(tmp_path, "run", EXAMPLES / "branch_and_join.yaml", "--inputs-file", inputs)

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: input '{inputs}': ")
    assert says in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


BAD_SETTINGS = [
    pytest.param(
        {"WHENFLOW_DATABASE_URL": "postgresql+asyncpg://whenflow:hunter2secret@127.0.0.1:1/x"},
        "cannot connect to the database",
        id="unreachable-postgresql",
    ),
    pytest.param(
        {"WHENFLOW_DATABASE_URL": "::not a url hunter2secret::"},
        "not a URL whenflow can parse",
        id="unparseable-url",
    ),
    pytest.param(
        {"WHENFLOW_DATABASE_URL": "mysql://root:hunter2secret@localhost/db"},
        "unsupported database URL",
        id="unsupported-database",
    ),
    pytest.param(
        {"WHENFLOW_DATABASE_URL": "sqlite+aiosqlite:////no/such/folder/whenflow.db"},
        "does not exist",
        id="missing-sqlite-folder",
    ),
    pytest.param(
        {"WHENFLOW_ARTIFACTS_URL": "bogus://bucket/prefix"},
        "cannot use the artifacts URL (scheme 'bogus')",
        id="unknown-artifacts-scheme",
    ),
]


@pytest.mark.parametrize(("env", "says"), BAD_SETTINGS)
@pytest.mark.parametrize(
    "args",
    [
        ["run", str(EXAMPLES / "branch_and_join.yaml"), "-i", "amount=1"],
        ["executions", "list"],
        ["resume", "abc"],
    ],
    ids=["run", "list", "resume"],
)
def test_a_bad_store_setting_is_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], says: str, args: list[str]
) -> None:
    proc = run_cli(tmp_path, *args, env=env)

    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert says in lines[0]
    assert next(iter(env)) in lines[0]  # names the setting to fix
    assert "hunter2secret" not in proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("missing_as", ["shims", "absent"])
def test_the_makefile_python_probe_is_silent_when_versions_are_missing(
    tmp_path: Path, missing_as: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for missing in ("python3.13", "python3.12"):
        if missing_as == "absent":
            continue
        # What a pyenv shim does for a version that is not selected: on PATH, but it fails.
        shim = bin_dir / missing
        shim.write_text(f'#!/bin/sh\necho "pyenv: {missing}: command not found" >&2\nexit 127\n')
        shim.chmod(0o755)
    (bin_dir / "python3.11").symlink_to(sys.executable)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}

    proc = subprocess.run(
        ["make", "-s", "--no-print-directory", "which-python"],
        cwd=REPO_ROOT,
        env={**env, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == f"{bin_dir / 'python3.11'}\n"


def test_version_through_the_real_cli(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "--version")

    assert proc.returncode == 0
    assert proc.stdout.startswith("whenflow ")
    assert not (tmp_path / "whenflow.db").exists()  # no store opened for it
