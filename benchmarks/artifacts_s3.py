"""A 200 MiB file passed between two nodes through S3 (issue 15 item 7).

    .venv/bin/python benchmarks/artifacts_s3.py [--mib 200] [--repeat 3]

moto's S3 server runs on loopback (tests/s3_server.py: the tests' own); the
pipeline `big_file -> read_file` (benchmarks/tasks.py) runs through
`whenflow run` with `WHENFLOW_ARTIFACTS_URL=s3://...`. The producer writes the
file locally; whenflow uploads it (sha256 and a cache copy in the same pass);
the reader's input is verified against S3 (a second full read) before it starts.
A second process then downloads the artifact into an empty cache.

Figures, per run, the median over `--repeat`:
- pass MB/s: file size / (wall time of the run - wall time of a 1 MiB run);
- peak RSS of the `whenflow run` process (os.wait4), and its growth over the 1 MiB run;
- download MB/s and peak RSS of the other process.
moto is a Python server: against MinIO or S3 the transfer rates are higher.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from s3_server import running_s3_server  # noqa: E402  (the tests' loopback server)

MIB = 1 << 20
PIPELINE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: s3_big_file, version: 1.0.0}
spec:
  inputs:
    work: {type: string, required: true}
    mib: {type: integer, required: true}
  nodes:
    - id: produce
      task: {type: python, callable: "benchmarks.tasks:big_file"}
      inputBindings: {folder: "{{ pipeline.input.work }}", mib: "{{ pipeline.input.mib }}"}
    - id: consume
      task: {type: python, callable: "benchmarks.tasks:read_file"}
      inputBindings: {blob: "{{ produce.blob }}"}
"""
DOWNLOAD = """
import json, sys
from whenflow.domain.variables import ArtifactRef
from whenflow.storage.connections import EnvironmentConnections
from whenflow.storage.s3_artifacts import open_artifact_store

url, cache, ref = sys.argv[1], sys.argv[2], ArtifactRef.from_json(json.loads(sys.argv[3]))
open_artifact_store(url, "bench", EnvironmentConnections(), cache).local_path(ref)
"""


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run argv; (wall seconds, peak RSS bytes of that process, stdout)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{argv[:4]} failed ({proc.returncode}):\n{err.read()}")
        return wall, usage.ru_maxrss * 1024, out.read()


def one_round(server: object, mib: int, scratch: Path) -> dict[str, float]:
    bucket = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    server.make_bucket(bucket)  # type: ignore[attr-defined]
    env = {
        **os.environ,
        "WHENFLOW_ARTIFACTS_URL": f"s3://{bucket}/whenflow",
        "WHENFLOW_ARTIFACTS_CONNECTION": "bench",
        "WHENFLOW_CONN_BENCH": server.connection_url,  # type: ignore[attr-defined]
    }
    pipeline = scratch / "big.yaml"
    pipeline.write_text(PIPELINE)
    figures: dict[str, float] = {}
    refs = {}
    for size in (1, mib):
        work = scratch / f"work{size}"
        work.mkdir()
        home_env = {**env, "WHENFLOW_HOME": str(scratch / f"home{size}")}
        argv = [sys.executable, "-m", "whenflow.cli.main", "run", str(pipeline)]
        argv += ["-i", f"work={work}", "-i", f"mib={size}", "--json"]
        wall, rss, stdout = measured(argv, home_env)
        result = json.loads(stdout)
        refs[size] = result["nodes"]["produce"]["outputs"]["blob"]
        figures[f"run_s_{size}"], figures[f"rss_{size}"] = wall, rss
        wall, rss, _ = measured(
            [
                sys.executable,
                "-c",
                DOWNLOAD,
                env["WHENFLOW_ARTIFACTS_URL"],
                str(scratch / f"cache{size}"),
                json.dumps(refs[size]),
            ],
            home_env,
        )
        figures[f"dl_s_{size}"], figures[f"dl_rss_{size}"] = wall, rss
    moved = (mib - 1) * MIB / 1e6
    return {
        "pass_mb_s": moved / (figures[f"run_s_{mib}"] - figures["run_s_1"]),
        "run_rss_mib": figures[f"rss_{mib}"] / MIB,
        "run_rss_growth_mib": (figures[f"rss_{mib}"] - figures["rss_1"]) / MIB,
        "download_mb_s": moved / (figures[f"dl_s_{mib}"] - figures["dl_s_1"]),
        "download_rss_mib": figures[f"dl_rss_{mib}"] / MIB,
        "download_rss_growth_mib": (figures[f"dl_rss_{mib}"] - figures["dl_rss_1"]) / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs; medians are printed")
    args = parser.parse_args()
    rounds = []
    with running_s3_server() as server:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="whenflow-bench-s3-") as scratch:
                rounds.append(one_round(server, args.mib, Path(scratch)))
    print(
        f"{args.mib} MiB file between two nodes through S3 (moto on loopback), "
        f"median of {args.repeat}:"
    )
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        print(
            f"  {name:26} {statistics.median(values):8.1f}   "
            f"(runs: {', '.join(f'{v:.1f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
