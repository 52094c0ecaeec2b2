"""Pipelines whose artifacts live on S3 (issue 15 item 7), through the real CLI.

moto's S3 server runs on loopback (tests/s3_server.py); the CLI finds it
through `WHENFLOW_ARTIFACTS_URL` and the connection `WHENFLOW_ARTIFACTS_CONNECTION`
names. Files, directories, Parquet tables and large values pass between nodes;
a 200 MB file passes without entering the event log or the variable table,
and the peak RSS of the process that moves it stays far below its size. The
secret key appears nowhere whenflow writes or prints.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import REPO_ROOT, cli_argv, cli_env, run_cli, run_json, write_pipeline

from s3_server import SECRET_FORMS

MIB = 1 << 20

TASKS = """
import hashlib
import os
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq


def produce(folder: str) -> dict:
    work = pathlib.Path(folder)
    report = work / "report.txt"
    report.write_text("rows=3\\n")
    pages = work / "pages"
    (pages / "chapter").mkdir(parents=True, exist_ok=True)
    (pages / "index.html").write_text("<h1>index</h1>")
    (pages / "chapter" / "one.html").write_text("<p>one</p>")
    table = work / "features.parquet"
    pq.write_table(pa.table({"user": ["a", "b"], "clicks": [3, 5]}), table)
    return {"report": report, "pages": pages, "table": table, "numbers": list(range(200_000))}


def consume(report: str, pages: str, table: str, numbers: list) -> dict:
    rows = pq.read_table(table).to_pylist()
    folder = pathlib.Path(pages)
    listed = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return {
        "report": pathlib.Path(report).read_text(),
        "listed": listed,
        "rows": rows,
        "total": sum(numbers),
    }


def big_file(folder: str, mib: int) -> dict:
    path = pathlib.Path(folder) / "big.bin"
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        for i in range(mib):
            chunk = i.to_bytes(8, "big") + block[8:]
            out.write(chunk)
            digest.update(chunk)
    return {"blob": path, "sha256": digest.hexdigest()}


def read_file(blob: str) -> dict:
    digest = hashlib.sha256()
    size = 0
    with open(blob, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size}
"""

ROUND_TRIP = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: s3_round_trip, version: 1.0.0}
spec:
  inputs: {work: {type: string, required: true}}
  nodes:
    - id: produce
      task: {type: python, callable: "s3tasks:produce"}
      inputBindings: {folder: "{{ pipeline.input.work }}"}
    - id: consume
      task: {type: python, callable: "s3tasks:consume"}
      inputBindings:
        report: "{{ produce.report }}"
        pages: "{{ produce.pages }}"
        table: "{{ produce.table }}"
        numbers: "{{ produce.numbers }}"
    - id: environment
      task: {type: shell, script: 'env; echo "shell saw $WF_INPUT_REPORT"'}
      inputBindings: {report: "{{ produce.report }}"}
"""

BIG = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: s3_big_file, version: 1.0.0}
spec:
  inputs:
    work: {type: string, required: true}
    mib: {type: integer, required: true}
  nodes:
    - id: produce
      task: {type: python, callable: "s3tasks:big_file"}
      inputBindings: {folder: "{{ pipeline.input.work }}", mib: "{{ pipeline.input.mib }}"}
    - id: consume
      task: {type: python, callable: "s3tasks:read_file"}
      inputBindings: {blob: "{{ produce.blob }}"}
"""


def s3_env(server: Any, bucket: str) -> dict[str, str]:
    return {
        "WHENFLOW_ARTIFACTS_URL": f"s3://{bucket}/whenflow",
        "WHENFLOW_ARTIFACTS_CONNECTION": "minio",
        "WHENFLOW_CONN_MINIO": server.connection_url,
    }


def _pipeline(tmp_path: Path, name: str, body: str) -> tuple[Path, Path]:
    (tmp_path / "s3tasks.py").write_text(TASKS)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return write_pipeline(tmp_path, name, body), work


def test_files_directories_parquet_and_values_pass_between_nodes_on_s3(
    s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    pipeline, work = _pipeline(tmp_path, "round_trip.yaml", ROUND_TRIP)
    home = tmp_path / "home"
    env = s3_env(s3_server, s3_bucket)

    proc = run_cli(home, "run", pipeline, "-i", f"work={work}", "--json", env=env)

    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["nodes"]["consume"]["outputs"] == {
        "report": "rows=3\n",
        "listed": ["chapter/one.html", "index.html"],
        "rows": [{"user": "a", "clicks": 3}, {"user": "b", "clicks": 5}],
        "total": sum(range(200_000)),
    }
    produced = result["nodes"]["produce"]["outputs"]
    prefix = f"s3://{s3_bucket}/whenflow/{result['executionId']}/produce/"
    assert {name: ref["uri"] for name, ref in produced.items()} == {
        "report": prefix + "report/report.txt",
        "pages": prefix + "pages/pages.tar.gz",
        "table": prefix + "table/features.parquet",
        "numbers": prefix + "numbers",
    }
    assert produced["table"]["content_type"] == "application/vnd.apache.parquet"
    assert produced["table"]["schema"]["fields"] == [
        {"name": "user", "type": "string", "nullable": True},
        {"name": "clicks", "type": "int64", "nullable": True},
    ]
    assert produced["numbers"]["kind"] == "value"
    fs = s3_server.filesystem()
    for ref in produced.values():
        assert fs.size(ref["uri"]) == ref["size"]
    assert not (home / "artifacts").exists()  # nothing went to the local default
    logs = run_cli(home, "executions", "logs", result["executionId"], "--json", env=env)
    printed = [line["message"] for line in json.loads(logs.stdout)]
    assert any(m.startswith("shell saw /") for m in printed)  # a local path, cached
    assert not [m for m in printed if "WHENFLOW_CONN_" in m]  # no task sees connections
    # The secret key is nowhere: output, store, cache, logs.
    shown = run_cli(home, "executions", "show", result["executionId"], "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    printed = proc.stdout + proc.stderr + shown.stdout + shown.stderr + logs.stdout
    for secret in SECRET_FORMS:
        assert secret not in printed
        for path in home.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_a_missing_bucket_fails_the_node_naming_the_store_not_the_secret(
    s3_server: Any, tmp_path: Path
) -> None:
    pipeline, work = _pipeline(tmp_path, "round_trip.yaml", ROUND_TRIP)
    env = s3_env(s3_server, "i15-missing-bucket")

    result = run_json(tmp_path, "run", pipeline, "-i", f"work={work}", env=env, expect_code=1)

    error = result["nodes"]["produce"]["error"]
    assert "the artifact store s3://i15-missing-bucket/whenflow failed to store" in error
    assert "WHENFLOW_ARTIFACTS_CONNECTION" in error
    assert not [s for s in SECRET_FORMS if s in json.dumps(result)]


def test_an_unknown_artifacts_connection_is_a_setting_error(tmp_path: Path) -> None:
    env = {"WHENFLOW_ARTIFACTS_URL": "s3://b/p", "WHENFLOW_ARTIFACTS_CONNECTION": "nowhere"}
    pipeline, work = _pipeline(tmp_path, "round_trip.yaml", ROUND_TRIP)

    proc = run_cli(tmp_path, "run", pipeline, "-i", f"work={work}", env=env)

    assert proc.returncode == 2
    assert "connection 'nowhere' is not defined" in proc.stderr
    assert "WHENFLOW_CONN_NOWHERE" in proc.stderr
    assert "Traceback" not in proc.stderr


DOWNLOAD = """
import json, sys
from whenflow.domain.variables import ArtifactRef
from whenflow.storage.connections import EnvironmentConnections
from whenflow.storage.s3_artifacts import open_artifact_store

url, cache, ref = sys.argv[1], sys.argv[2], ArtifactRef.from_json(json.loads(sys.argv[3]))
store = open_artifact_store(url, "minio", EnvironmentConnections(), cache)
print(store.local_path(ref))
"""


def run_measured(
    home: Path, args: list[str], env: dict[str, str], log: Path
) -> tuple[int, str, int]:
    """Run the CLI (or `python -c` when args[0] is "-c"); return (exit code, stdout,
    peak RSS in bytes of that process).

    `os.wait4` gives the resource usage of exactly this child, not of every
    child the test process ever had.
    """
    argv = [cli_argv()[0], *args] if args[0] == "-c" else cli_argv(*args)
    with (log / "out").open("w+") as out, (log / "err").open("w+") as err:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=cli_env(home, env), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert proc.returncode == 0, stderr
    return proc.returncode, stdout, usage.ru_maxrss * 1024  # Linux: KiB


@pytest.mark.slow
def test_a_200_mb_file_passes_between_nodes_streamed(
    s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    pipeline, work = _pipeline(tmp_path, "big.yaml", BIG)
    env = s3_env(s3_server, s3_bucket)
    peaks = {}
    results = {}
    for mib in (1, 200):
        home = tmp_path / f"home{mib}"
        logs = tmp_path / f"logs{mib}"
        logs.mkdir()
        args = ["run", str(pipeline), "-i", f"work={work}", "-i", f"mib={mib}", "--json"]
        _, stdout, peaks[mib] = run_measured(home, args, env, logs)
        results[mib] = json.loads(stdout)

    big = results[200]
    produced, consumed = big["nodes"]["produce"]["outputs"], big["nodes"]["consume"]["outputs"]
    assert consumed == {"sha256": produced["sha256"], "size": 200 * MIB}
    ref = produced["blob"]
    assert ref["uri"].startswith(f"s3://{s3_bucket}/whenflow/{big['executionId']}/produce/")
    assert (ref["size"], ref["sha256"]) == (200 * MIB, produced["sha256"])
    assert s3_server.filesystem().size(ref["uri"]) == 200 * MIB
    # Neither the variable table nor the event log holds the bytes: the store stays small.
    home = tmp_path / "home200"
    with sqlite3.connect(home / "whenflow.db") as db:
        value, artifact = db.execute(
            "SELECT value, artifact FROM variables WHERE scope = 'produce' AND name = 'blob'"
        ).fetchone()
        longest_event = db.execute("SELECT max(length(payload)) FROM events").fetchone()[0]
    db.close()
    assert value == "null"
    assert json.loads(artifact)["uri"] == ref["uri"]
    assert longest_event < 4096
    stored = sum(p.stat().st_size for p in home.glob("whenflow.db*"))
    assert stored < 2 * MIB
    # Streaming: moving 199 MiB more costs the process far less than the file's size
    # (about 55 MiB measured: one 8 MiB multipart part and the HTTP client's copies of
    # it, the 8 MiB read-ahead of the check; a buffered copy would add 200 MiB or more).
    growth = peaks[200] - peaks[1]
    print(f"peak RSS: 1 MiB run {peaks[1] / MIB:.0f} MiB, 200 MiB run {peaks[200] / MIB:.0f} MiB")
    assert growth < 100 * MIB, f"peak RSS grew by {growth / MIB:.0f} MiB for a 200 MiB file"

    # Another process (an empty cache) downloads it in blocks too.
    downloads = {}
    for mib in (1, 200):
        logs = tmp_path / f"download{mib}"
        logs.mkdir()
        blob = json.dumps(results[mib]["nodes"]["produce"]["outputs"]["blob"])
        url = env["WHENFLOW_ARTIFACTS_URL"]
        args = ["-c", DOWNLOAD, url, str(tmp_path / f"cache{mib}"), blob]
        _, stdout, downloads[mib] = run_measured(tmp_path, args, env, logs)
        assert Path(stdout.strip()).stat().st_size == mib * MIB
    growth = downloads[200] - downloads[1]
    assert growth < 64 * MIB, f"a download grew the peak RSS by {growth / MIB:.0f} MiB"
