"""Engine overhead through the real CLI with the durable SQLite store (issue #2, item 11).

    make bench    # or: .venv/bin/python benchmarks/run.py [--only NAME] [--repeat 3]
                  #     [--durability process --durability power]   (compare the levels)

Each scenario is a generated pipeline run by `whenflow run FILE --json` against a
SQLite database that already exists (a warm WHENFLOW_HOME, as a user's is). Three
figures per scenario, from `--repeat` runs:

- total per node: (wall time - wall time of a 1-node pipeline run just before
  it) / nodes, the median over the pairs; this includes parsing and validating
  the YAML and excludes interpreter start-up. Pairing cancels the drift of a
  shared machine, which is larger than a 1,000-node run's own cost;
- best per node: (the fastest run - the fastest 1-node run) / nodes. On a
  shared VM whose neighbours come and go, the fastest of N runs is the figure
  least disturbed by them (as `timeit` reports the minimum); the median shows
  what a typical run costs;
- run per node: from `pipeline.started` to the terminal `pipeline.*` event, read
  from the durable event log itself, / nodes: the dispatcher, executors and group
  commit, without loading.

Figures are printed, never asserted: speed is measured, not tested.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "apiVersion: whenflow/v1\nkind: Pipeline\n"
    "metadata: {name: bench, version: 1.0.0}\nspec:\n  nodes:\n"
)


def _task(kind: str) -> str:
    if kind == "noop":
        return "{type: noop}"
    return "{type: python, callable: benchmarks.tasks:identity}"


def single(n: int, kind: str) -> str:
    return HEADER + f"    - {{id: n0, task: {_task(kind)}, inputBindings: {{v: 0}}}}\n"


def chain(n: int, kind: str) -> str:
    lines = [f"    - {{id: n0, task: {_task(kind)}, inputBindings: {{v: 0}}}}"]
    for i in range(1, n):
        lines.append(
            f"    - {{id: n{i}, task: {_task(kind)}, inputBindings: {{v: '{{{{ n{i - 1}.v }}}}'}}}}"
        )
    return HEADER + "\n".join(lines) + "\n"


def fan_out(n: int, kind: str) -> str:
    lines = [f"    - {{id: root, task: {_task(kind)}, inputBindings: {{v: 1}}}}"]
    for i in range(n):
        lines.append(
            f"    - {{id: n{i}, task: {_task(kind)}, inputBindings: {{v: '{{{{ root.v }}}}'}}}}"
        )
    return HEADER + "\n".join(lines) + "\n"


def fan_out_in(n: int, kind: str) -> str:
    text = fan_out(n, kind)
    reads = ", ".join(f"n{i}: '{{{{ n{i}.v }}}}'" for i in range(n))
    return text + f"    - {{id: join, task: {{type: noop}}, inputBindings: {{{reads}}}}}\n"


SCENARIOS: dict[str, tuple[Callable[[int, str], str], int, str]] = {
    "chain_1000_noop": (chain, 1000, "noop"),
    "fan_out_in_1000_noop": (fan_out_in, 1000, "noop"),
    "fan_out_1000_noop": (fan_out, 1000, "noop"),
    "fan_out_10000_noop": (fan_out, 10000, "noop"),
    "chain_1000_python": (chain, 1000, "python"),
    "fan_out_in_1000_python": (fan_out_in, 1000, "python"),
    "fan_out_1000_python": (fan_out, 1000, "python"),
    "fan_out_10000_python": (fan_out, 10000, "python"),
}


def run_once(
    text: str, workdir: Path, durability: str = "process"
) -> tuple[float, float, dict[str, object]]:
    """(wall seconds, run-phase seconds from the event log, the --json result)."""
    path = workdir / "pipeline.yaml"
    path.write_text(text)
    home = workdir / "home"
    env = {
        **os.environ,
        "WHENFLOW_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "WHENFLOW_DURABILITY": durability,
    }
    whenflow = [sys.executable, "-m", "whenflow.cli.main"]
    started = time.perf_counter()
    proc = subprocess.run(
        [*whenflow, "run", str(path), "--json"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)
    with sqlite3.connect(home / "whenflow.db") as db:
        first, last = db.execute(
            "SELECT min(timestamp), max(timestamp) FROM events WHERE execution_id = ?",
            (result["execution_id"],),
        ).fetchone()
    return elapsed, last - first, result


def _scenario(name: str) -> tuple[Callable[[int, str], str], int, str]:
    return SCENARIOS[name.partition("@")[0]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", help="run just these scenarios")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (median kept)")
    parser.add_argument(
        "--durability",
        action="append",
        choices=("process", "power"),
        help="WHENFLOW_DURABILITY of the runs (repeat it to compare levels; default process)",
    )
    args = parser.parse_args()
    levels: list[str] = args.durability or ["process"]
    scenarios = args.only or list(SCENARIOS)
    # One row per scenario and level; `@power` marks the runs that sync every commit.
    chosen = [s if level == "process" else f"{s}@{level}" for s in scenarios for level in levels]
    totals: dict[str, float] = {}
    bests: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="whenflow-bench-") as tmp:
        workdir = Path(tmp)
        run_once(single(1, "noop"), workdir)  # creates and migrates the database once
        print(
            f"{'scenario':<30}{'nodes':>7}{'wall s':>9}{'total/node ms':>15}"
            f"{'best/node ms':>14}{'run/node ms':>13}"
        )
        texts = {name: _scenario(name)[0](*_scenario(name)[1:]) for name in chosen}
        diffs: dict[str, list[float]] = {name: [] for name in chosen}
        walls: dict[str, list[float]] = {name: [] for name in chosen}
        base_walls: dict[str, list[float]] = {name: [] for name in chosen}
        run_phases: dict[str, list[float]] = {name: [] for name in chosen}
        nodes: dict[str, int] = {}
        # Round-robin over the scenarios: the shared database grows with every run,
        # and each scenario should see it at every size, not the 10,000-node ones last.
        for _ in range(args.repeat):
            for name in chosen:
                kind = _scenario(name)[2]
                level = name.partition("@")[2] or "process"
                base_wall = run_once(single(1, kind), workdir, level)[0]
                wall, run_phase, result = run_once(texts[name], workdir, level)
                assert result["status"] == "completed", result["status"]
                nodes[name] = len(result["nodes"])  # type: ignore[arg-type]
                diffs[name].append(wall - base_wall)
                walls[name].append(wall)
                base_walls[name].append(base_wall)
                run_phases[name].append(run_phase)
        for name in chosen:
            count = nodes[name]
            totals[name] = statistics.median(diffs[name])
            bests[name] = min(walls[name]) - min(base_walls[name])
            print(
                f"{name:<30}{count:>7}{statistics.median(walls[name]):>9.3f}"
                f"{totals[name] / count * 1000:>15.3f}"
                f"{bests[name] / count * 1000:>14.3f}"
                f"{statistics.median(run_phases[name]) / count * 1000:>13.3f}"
            )
    for kind in ("noop", "python"):
        small, big = f"fan_out_1000_{kind}", f"fan_out_10000_{kind}"
        if small in totals and big in totals:
            print(
                f"10,000 / 1,000 fan-out ({kind}): {totals[big] / totals[small]:.1f}x total, "
                f"{bests[big] / bests[small]:.1f}x best (linear: 10x)"
            )


if __name__ == "__main__":
    main()
