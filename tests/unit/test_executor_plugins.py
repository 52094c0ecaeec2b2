"""Loading executors from `whenflow.executors` entry points (executors/plugins.py)."""

from __future__ import annotations

import asyncio
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from whenflow.backends.local import LocalRunner
from whenflow.domain.connections import Connection, NoConnections
from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import ExecutorEnvironment, TaskRequest
from whenflow.executors.errors import ExecutorPluginError
from whenflow.executors.plugins import (
    BUILTIN_EXECUTORS,
    ENTRY_POINT_GROUP,
    BrokenExecutor,
    ExecutorSource,
    discover,
    load_executors,
)
from whenflow.executors.registry import default_registry

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "tests" / "plugins" / "whenflow_echo"


class _OneConnection:
    def get(self, name: str) -> Connection:
        return Connection(name, "postgresql://u:pw@db.example.org/x")

    def names(self) -> list[str]:
        return ["warehouse"]


@pytest.fixture
def echo_module(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    return "whenflow_echo"


def environment(**settings: str) -> ExecutorEnvironment:
    return ExecutorEnvironment(connections=_OneConnection(), settings=settings)


def test_the_builtin_types_are_declared_as_entry_points() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared[ENTRY_POINT_GROUP] == BUILTIN_EXECUTORS
    installed = {
        ep.name: ep.value
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.name == "whenflow"
    }
    assert installed == BUILTIN_EXECUTORS, "reinstall: pip install -e '.[dev]'"


def test_a_source_tree_without_metadata_still_has_the_builtins() -> None:
    sources = discover(entry_points=[])
    own = [s for s in sources if s.name in BUILTIN_EXECUTORS]
    assert {s.name for s in own} >= set(BUILTIN_EXECUTORS)


def test_a_plugin_factory_gets_the_environment(echo_module: str) -> None:
    source = ExecutorSource("echo", f"{echo_module}:make_executor", "whenflow-echo 0.1.0")
    (executor,) = load_executors(environment(), [source])
    assert executor.task_type == "echo"
    request = TaskRequest(
        "e", "n", 1, TaskSpec("echo", {"connection": "warehouse"}), {"name": "x"}, "e/n"
    )
    ctx = _Ctx()
    outputs = asyncio.run(executor.execute(request, ctx)).outputs
    assert outputs == {"echo": "hello x", "host": "db.example.org"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("whenflow_echo_missing:make", "cannot import whenflow_echo_missing:make: ModuleNotFound"),
        ("whenflow_echo:FIELDS", "is not callable"),
        ("whenflow_echo:make_executor", "raised RuntimeError: WHENFLOW_ECHO_FAIL is set"),
    ],
)
def test_a_broken_plugin_is_reported_with_its_distribution(
    echo_module: str, value: str, reason: str
) -> None:
    source = ExecutorSource("echo", value, "whenflow-echo 0.1.0")
    (executor,) = load_executors(environment(WHENFLOW_ECHO_FAIL="1"), [source])
    assert isinstance(executor, BrokenExecutor)
    (problem,) = executor.check(TaskSpec("echo"))
    assert "executor plugin 'echo' from the distribution whenflow-echo 0.1.0" in problem
    assert reason in problem
    with pytest.raises(ExecutorPluginError, match="whenflow-echo"):
        asyncio.run(executor.execute(TaskRequest("e", "n", 1, TaskSpec("echo"), {}, "e/n"), _Ctx()))


def test_validation_reports_the_broken_plugin(echo_module: str) -> None:
    source = ExecutorSource("echo", "whenflow_echo:make_executor", "whenflow-echo 0.1.0")
    registry = default_registry(environment(WHENFLOW_ECHO_FAIL="1"))
    registry.register(next(iter(load_executors(environment(WHENFLOW_ECHO_FAIL="1"), [source]))))
    runner = LocalRunner(registry)
    assert runner.knows("echo")
    assert "failed to load" in runner.check(TaskSpec("echo"))[0]


def test_a_name_must_match_and_be_claimed_once(echo_module: str) -> None:
    wrong = ExecutorSource("shout", "whenflow_echo:make_executor", "whenflow-echo 0.1.0")
    (executor,) = load_executors(environment(), [wrong])
    assert (
        "task_type 'echo', but the entry point is named 'shout'"
        in executor.check(TaskSpec("shout"))[0]
    )
    twice = [
        ExecutorSource("echo", "whenflow_echo:make_executor", "whenflow-echo 0.1.0"),
        ExecutorSource("echo", "other_echo:make", "other-echo 2.0"),
    ]
    (executor,) = load_executors(environment(), twice)
    assert (
        "declared by both whenflow-echo 0.1.0 and other-echo 2.0"
        in executor.check(TaskSpec("echo"))[0]
    )


def test_default_registry_without_environment_knows_no_connection() -> None:
    registry = default_registry()
    assert {"noop", "python", "shell", "sql"} <= set(registry.types)
    assert NoConnections().names() == []


def test_plugin_rendered_fields_are_rendered(echo_module: str) -> None:
    source = ExecutorSource("echo", "whenflow_echo:make_executor", "whenflow-echo 0.1.0")
    registry = default_registry()
    registry.register(next(iter(load_executors(environment(), [source]))))
    runner = LocalRunner(registry)
    assert runner.rendered_fields("echo") == ("greeting",)
    assert runner.rendered_fields("sql") == ("params", "insert")
    assert runner.rendered_fields("nope") == ()


class _Ctx:
    execution_id = "e"
    node_id = "n"
    attempt = 1
    idempotency_key = "e/n"
    item_index = None

    def emit(self, name: str, payload: Any = None) -> None:
        return None

    def log(self, message: str, *, stream: str = "log") -> None:
        return None


def test_loading_a_pipeline_imports_no_driver() -> None:
    """Every executor is loaded at validation: the `sql` one must not pull its drivers in."""
    import subprocess

    code = (
        "import sys\n"
        "from whenflow.services.pipelines import load_program\n"
        "load_program('examples/feature_engineering.yaml')\n"
        "print(sorted(m for m in ('sqlalchemy', 'pyarrow', 'duckdb', 'psycopg', 'pymysql')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_a_plugin_that_exits_while_loading_is_broken_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sys.exit()` in a plugin's import or factory must not end whenflow (a CLI command)."""
    (tmp_path / "exits_on_import.py").write_text("raise SystemExit('needs libfoo')\n")
    (tmp_path / "exits_in_factory.py").write_text(
        "import sys\n\ndef make(environment):\n    sys.exit(3)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sources = [
        ExecutorSource("a", "exits_on_import:make", "exits 1.0"),
        ExecutorSource("b", "exits_in_factory:make", "exits 1.0"),
    ]
    first, second = load_executors(environment(), sources)
    assert isinstance(first, BrokenExecutor)
    assert "SystemExit: needs libfoo" in first.check(TaskSpec("a"))[0]
    assert isinstance(second, BrokenExecutor)
    assert "raised SystemExit: 3" in second.check(TaskSpec("b"))[0]


def test_a_plugin_whose_check_raises_is_a_problem_not_a_traceback() -> None:
    class Faulty:
        task_type = "faulty"

        def check(self, task: TaskSpec) -> list[str]:
            raise RuntimeError("plugin bug in check")

        async def execute(self, request: TaskRequest, ctx: Any) -> Any:
            raise AssertionError("never run")

    registry = default_registry()
    registry.register(Faulty())
    (problem,) = LocalRunner(registry).check(TaskSpec("faulty"))
    assert "the 'faulty' executor could not check this task" in problem
    assert "RuntimeError: plugin bug in check" in problem


def test_a_plugin_whose_close_raises_does_not_stop_the_others_closing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    class Closing:
        def __init__(self, task_type: str, fails: bool) -> None:
            self.task_type, self._fails = task_type, fails

        def check(self, task: TaskSpec) -> list[str]:
            return []

        async def execute(self, request: TaskRequest, ctx: Any) -> Any:
            raise AssertionError("never run")

        def close(self) -> None:
            if self._fails:
                raise RuntimeError("plugin bug in close")
            closed.append(self.task_type)

    registry = default_registry()
    registry.register(Closing("aaa_faulty", fails=True))
    registry.register(Closing("zzz_fine", fails=False))
    LocalRunner(registry).close()  # a `whenflow run` ends here: no traceback, exit 0
    assert closed == ["zzz_fine"]
    assert "plugin bug in close" in caplog.text
