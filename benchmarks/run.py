"""Engine overhead through the real CLI with the durable SQLite store (issue #2, item 11).

    make bench            # or: .venv/bin/python benchmarks/run.py [--only chain_1000_noop]

Each scenario is a generated pipeline run by `whenflow run FILE --json` in a
fresh WHENFLOW_HOME. Per-node cost = (wall time - wall time of a 1-node
pipeline) / nodes, so interpreter start-up and imports are not counted as
per-node cost. Figures are printed, never asserted: speed is measured, not
tested.
"""

from __future__ import annotations

import argparse
import json
import os
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


def run_once(text: str, workdir: Path) -> tuple[float, dict[str, object]]:
    path = workdir / "pipeline.yaml"
    path.write_text(text)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=workdir))
    env = {**os.environ, "WHENFLOW_HOME": str(home), "PYTHONPATH": str(ROOT)}
    whenflow = [sys.executable, "-m", "whenflow.cli.main"]
    started = time.perf_counter()
    proc = subprocess.run(
        [*whenflow, "run", str(path), "--json"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", help="run just these scenarios")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario (best is kept)")
    args = parser.parse_args()
    chosen = args.only or list(SCENARIOS)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="whenflow-bench-") as tmp:
        workdir = Path(tmp)
        baselines = {
            k: min(run_once(single(1, k), workdir)[0] for _ in range(args.repeat))
            for k in ("noop", "python")
        }
        print(f"{'scenario':<24}{'nodes':>7}{'wall s':>9}{'per node ms':>13}")
        for kind, base in baselines.items():
            print(f"{'1 node (' + kind + ')':<24}{1:>7}{base:>9.3f}{'':>13}")
        for name in chosen:
            build, n, kind = SCENARIOS[name]
            text = build(n, kind)
            wall = float("inf")
            for _ in range(args.repeat):
                elapsed, result = run_once(text, workdir)
                wall = min(wall, elapsed)
                assert result["status"] == "completed", result["status"]
            nodes = len(result["nodes"])  # type: ignore[arg-type]
            per_node = (wall - baselines[kind]) / nodes * 1000
            results[name] = wall - baselines[kind]
            print(f"{name:<24}{nodes:>7}{wall:>9.3f}{per_node:>13.3f}")
    for kind in ("noop", "python"):
        small, big = results.get(f"fan_out_1000_{kind}"), results.get(f"fan_out_10000_{kind}")
        if small and big:
            print(f"10,000 / 1,000 fan-out ({kind}): {big / small:.1f}x  (linear would be 10x)")


if __name__ == "__main__":
    main()
