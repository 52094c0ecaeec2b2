"""An executor plugin, installed for real, adds a task type to the `whenflow` CLI.

tests/plugins/whenflow_echo is a distribution of its own (pyproject.toml with
a `whenflow.executors` entry point). It is built and installed with pip into
a temporary folder (`--target`, no dependencies: whenflow is the one under
test), which the CLI then finds on PYTHONPATH as any installed package:
through its dist-info's entry points, never by importing it by name.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli, run_json, write_pipeline

PLUGIN_SOURCE = Path(__file__).resolve().parents[1] / "plugins" / "whenflow_echo"

PIPELINE = """
    apiVersion: whenflow/v1
    kind: Pipeline
    metadata: {name: plugin_demo, version: 1.0.0}
    spec:
      inputs:
        who: {type: string, default: plugins}
      nodes:
        - id: greet
          task:
            type: echo
            greeting: "hi {{ pipeline.input.who }},"
            connection: warehouse
          inputBindings:
            name: world
      outputs:
        said: "{{ greet.echo }}"
        host: "{{ greet.host }}"
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where pip installed whenflow-echo (its package and its dist-info)."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"
    shutil.copytree(PLUGIN_SOURCE, source)  # the build writes build/ and egg-info beside it
    target = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert list(target.glob("whenflow_echo-0.1.0.dist-info"))
    return target


def test_an_installed_plugin_runs_its_task_type_through_the_cli(
    plugin_path: Path, tmp_path: Path
) -> None:
    pipeline = write_pipeline(tmp_path, "plugin.yaml", PIPELINE)
    env = {
        "PYTHONPATH": str(plugin_path),
        "WHENFLOW_CONN_WAREHOUSE": "postgresql://etl:pw-not-shown@db.example.org:5432/dw",
    }
    valid = run_json(tmp_path, "validate", pipeline, env=env)
    assert valid["valid"] is True
    result = run_json(tmp_path, "run", pipeline, env=env)
    assert result["status"] == "completed"
    assert result["outputs"] == {"said": "hi plugins, world", "host": "db.example.org"}
    logs = run_cli(tmp_path, "executions", "logs", result["executionId"], env=env)
    assert "echoing for greet" in logs.stdout


def test_without_the_plugin_the_type_is_unknown(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, "plugin.yaml", PIPELINE)
    proc = run_cli(tmp_path, "validate", pipeline)
    assert proc.returncode == 2
    assert "unknown task type 'echo'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_plugin_that_fails_to_load_is_named_by_its_distribution(
    plugin_path: Path, tmp_path: Path
) -> None:
    pipeline = write_pipeline(tmp_path, "plugin.yaml", PIPELINE)
    env = {"PYTHONPATH": str(plugin_path), "WHENFLOW_ECHO_FAIL": "1"}
    proc = run_cli(tmp_path, "validate", pipeline, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "plugin.yaml:" in proc.stderr
    assert "executor plugin 'echo' from the distribution whenflow-echo 0.1.0 failed to load" in (
        proc.stderr
    )
    assert "WHENFLOW_ECHO_FAIL is set" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Pipelines that do not use it still run.
    other = write_pipeline(
        tmp_path,
        "other.yaml",
        """
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {name: other, version: 1.0.0}
        spec:
          nodes:
            - id: a
              task: {type: noop}
        """,
    )
    assert run_json(tmp_path, "run", other, env=env)["status"] == "completed"
