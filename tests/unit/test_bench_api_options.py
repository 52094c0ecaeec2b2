"""benchmarks/api.py: its options and its percentile (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "api.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The script as a module, as `python benchmarks/api.py` loads it: its folder first on
    sys.path (for `api_server`), the module registered (its dataclasses look it up)."""
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("whenflow_bench_api", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]
        sys.modules.pop("api_server", None)
        sys.path.remove(str(SCRIPT.parent))


def test_percentile_is_nearest_rank(bench: ModuleType) -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted on purpose
    assert bench.percentile(values, 50) == 50.0
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile(values, 100) == 100.0
    assert bench.percentile([7.0], 50) == 7.0
    assert bench.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert bench.percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0


@pytest.mark.parametrize("q", [0, -1, 101])
def test_percentile_refuses_a_rank_out_of_range(bench: ModuleType, q: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        bench.percentile([1.0], q)


def test_percentile_of_nothing_is_an_error(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="no values"):
        bench.percentile([], 50)


def test_defaults_and_quick(bench: ModuleType) -> None:
    full = bench.parse_args([])
    assert (full.store, full.clients, full.count, full.waiting) == ("sqlite", 10, 1000, 1000)
    assert (full.rates, full.seconds, full.stats_calls) == ([10.0, 50.0, 100.0], 10.0, 50)
    assert (full.keys, full.senders) == (False, 64)
    assert bench.parse_args(["--idempotency-keys"]).keys is True
    quick = bench.parse_args(["--quick"])
    assert (quick.count, quick.waiting, quick.seconds) == (200, 200, 3.0)
    explicit = bench.parse_args(["--quick", "--count", "7", "--store", "postgresql"])
    assert (explicit.count, explicit.store) == (7, "postgresql")
    assert bench.parse_args(["--rates", "5, 20"]).rates == [5.0, 20.0]


@pytest.mark.parametrize(
    "argv",
    [
        ["--store", "mysql"],
        ["--rates", "fast"],
        ["--rates", "10,-1"],
        ["--count", "0"],
        ["--seconds", "0"],
    ],
)
def test_bad_options_exit_2(
    bench: ModuleType, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err
