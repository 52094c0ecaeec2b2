"""Artifacts and the store on disk (issue 13 item 18): private, verified, and cleaned up.

`$WHENFLOW_HOME` is private to its user whatever the umask; a reader of an
artifact that was modified after it was stored fails naming it, in a run and
after a resume; what failed attempts stored is gone once the execution ends.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

from cli_helpers import REPO_ROOT, cli_argv, cli_env, run_cli, run_json, write_pipeline
from test_approvals_cli import waiting_run

TASKS = """
import os
import pathlib


def private_report(folder: str) -> dict:
    path = pathlib.Path(folder) / "shadow.txt"
    path.write_text("root:$6$secret\\n")
    os.chmod(path, 0o640)
    return {"report": path, "big": "x" * 1_100_000}


def report(folder: str) -> dict:
    path = pathlib.Path(folder) / "report.txt"
    path.write_text("rows=3\\n")
    return {"report": path}


def flaky_report(folder: str, attempt: int) -> dict:
    path = pathlib.Path(folder) / f"attempt{attempt}.txt"
    path.write_text(f"attempt {attempt}\\n")
    if attempt == 1:
        return {"report": path, "broken": {1, 2}}  # not JSON: fails after the copy
    return {"report": path}


def same_name_retry(folder: str, attempt: int) -> dict:
    path = pathlib.Path(folder) / "same.txt"
    path.write_text(f"attempt {attempt}\\n")
    if attempt == 1:
        return {"report": path, "broken": {1}}  # stored under the key attempt 2 reuses
    return {"report": path}


def always_broken(folder: str) -> dict:
    path = pathlib.Path(folder) / "never.txt"
    path.write_text("never kept\\n")
    return {"report": path, "broken": {3}}


def item_report(folder: str, item: int) -> dict:
    path = pathlib.Path(folder) / f"item{item}.txt"
    path.write_text(f"item {item}\\n")
    return {"report": path}
"""

PRIVATE = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: private, version: 1.0.0}
spec:
  inputs: {work: {type: string, required: true}}
  nodes:
    - id: produce
      task: {type: python, callable: "filetasks:private_report"}
      inputBindings: {folder: "{{ pipeline.input.work }}"}
"""

LEFTOVERS = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: leftovers, version: 1.0.0}
spec:
  inputs: {work: {type: string, required: true}}
  nodes:
    - id: flaky
      task: {type: python, callable: "filetasks:flaky_report"}
      retry: {maxAttempts: 2, delay: 0s}
      inputBindings: {folder: "{{ pipeline.input.work }}", attempt: "{{ system.attempt }}"}
    - id: broken
      task: {type: python, callable: "filetasks:always_broken"}
      allowFailure: true
      inputBindings: {folder: "{{ pipeline.input.work }}"}
    - id: items
      forEach: "{{ [1, 2] }}"
      task: {type: python, callable: "filetasks:item_report"}
      inputBindings: {folder: "{{ pipeline.input.work }}", item: "{{ item }}"}
"""

TAMPERED = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: tampered, version: 1.0.0}
spec:
  inputs: {work: {type: string, required: true}}
  nodes:
    - id: produce
      task: {type: python, callable: "filetasks:report"}
      inputBindings: {folder: "{{ pipeline.input.work }}"}
    - id: tamper
      task: {type: shell, script: 'printf "rows=999\\\\n" >> "$WF_INPUT_PATH"'}
      inputBindings: {path: "{{ produce.report }}"}
    - id: consume
      startWhen: "event:produce.completed && event:tamper.completed"
      task: {type: shell, script: 'cat "$WF_INPUT_PATH"'}
      inputBindings: {path: "{{ produce.report }}"}
"""

RETRIED = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: retried, version: 1.0.0}
spec:
  inputs: {work: {type: string, required: true}}
  nodes:
    - id: produce
      task: {type: python, callable: "filetasks:same_name_retry"}
      retry: {maxAttempts: 2, delay: 0s}
      inputBindings: {folder: "{{ pipeline.input.work }}", attempt: "{{ system.attempt }}"}
    - id: consume
      task: {type: shell, script: 'cat "$WF_INPUT_PATH"'}
      inputBindings: {path: "{{ produce.report }}"}
"""

GATED = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: gated_report, version: 1.0.0}
spec:
  nodes:
    - id: produce
      task: {type: python, callable: "filetasks:report"}
      inputBindings: {folder: "WORK"}
    - id: review
      startWhen: event:produce.completed
      task: {type: approval, message: "Ship app.tar?"}
    - id: consume
      startWhen: "event:review.approved && event:produce.completed"
      task: {type: shell, script: 'cat "$WF_INPUT_PATH"'}
      inputBindings: {path: "{{ produce.report }}"}
"""


def _pipeline(tmp_path: Path, name: str, body: str) -> tuple[Path, Path]:
    (tmp_path / "filetasks.py").write_text(TASKS)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return write_pipeline(tmp_path, name, body), work


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_home_is_private_whatever_the_umask(tmp_path: Path) -> None:
    pipeline, work = _pipeline(tmp_path, "private.yaml", PRIVATE)
    home = tmp_path / "fresh" / "home"  # created by whenflow

    proc = subprocess.run(
        cli_argv("run", str(pipeline), "-i", f"work={work}", "--json"),
        cwd=REPO_ROOT,
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=lambda: os.umask(0),  # the loosest umask: every mode is whenflow's own
    )

    assert proc.returncode == 0, proc.stderr
    assert _mode(work / "shadow.txt") == 0o640
    folders = [home, *(p for p in home.rglob("*") if p.is_dir())]
    files = [p for p in home.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"whenflow.db", "shadow.txt", "big"}
    assert {str(p): oct(_mode(p)) for p in folders} == {str(p): "0o700" for p in folders}
    assert {str(p): oct(_mode(p)) for p in files} == {str(p): "0o600" for p in files}


def test_an_older_homes_database_and_artifacts_are_made_private(tmp_path: Path) -> None:
    pipeline, work = _pipeline(tmp_path, "private.yaml", PRIVATE)
    home = tmp_path / "old-home"
    first = run_json(home, "run", pipeline, "-i", f"work={work}")
    # As an older whenflow under umask 022 left them:
    home.chmod(0o755)
    (home / "whenflow.db").chmod(0o644)
    (home / "artifacts").chmod(0o755)

    run_json(home, "executions", "show", first["executionId"][:8])

    assert oct(_mode(home / "whenflow.db")) == "0o600"
    assert oct(_mode(home / "artifacts")) == "0o700"
    assert oct(_mode(home)) == "0o755"  # a folder the user chose keeps its mode


def test_artifacts_of_failed_attempts_are_deleted_when_the_execution_ends(
    tmp_path: Path,
) -> None:
    pipeline, work = _pipeline(tmp_path, "leftovers.yaml", LEFTOVERS)

    result = run_json(tmp_path, "run", pipeline, "-i", f"work={work}")

    assert result["status"] == "completed"
    assert result["nodes"]["flaky"]["attempts"] == 2
    assert result["nodes"]["broken"]["status"] == "failed"
    root = tmp_path / "artifacts" / result["executionId"]
    stored = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    # Kept: the completed attempt's file and each forEach item's; gone: attempt 1's
    # file and the failed node's, which no variable references.
    assert stored == [
        "flaky/report/attempt2.txt",
        "items/0/report/item1.txt",
        "items/1/report/item2.txt",
    ]
    assert not (root / "broken").exists()
    kept = Path(result["nodes"]["flaky"]["outputs"]["report"]["uri"].removeprefix("file://"))
    assert kept.read_text() == "attempt 2\n"


def test_a_reader_of_a_modified_artifact_fails_naming_it(tmp_path: Path) -> None:
    pipeline, work = _pipeline(tmp_path, "tampered.yaml", TAMPERED)

    result = run_json(tmp_path, "run", pipeline, "-i", f"work={work}", expect_code=1)

    uri = result["nodes"]["produce"]["outputs"]["report"]["uri"]
    assert result["nodes"]["tamper"]["status"] == "completed"
    assert result["nodes"]["consume"]["status"] == "failed"
    error = result["nodes"]["consume"]["error"]
    assert f"artifact {uri} was modified after it was stored" in error
    consume = [e for e in result["events"] if e.startswith("consume.")]
    assert consume == ["consume.started", "consume.failed"]
    events = run_json(tmp_path, "executions", "events", result["executionId"])
    failed = [e for e in events if e["eventType"] == "consume.failed"]
    assert failed[0]["payload"]["error_type"] == "ArtifactIntegrityError"
    logs = run_json(tmp_path, "executions", "logs", result["executionId"], "--node", "consume")
    assert logs == []  # the task never ran on the modified bytes


def test_a_retry_that_rewrites_a_failed_attempts_file_is_read_as_sound(tmp_path: Path) -> None:
    pipeline, work = _pipeline(tmp_path, "retried.yaml", RETRIED)

    result = run_json(tmp_path, "run", pipeline, "-i", f"work={work}")

    assert result["status"] == "completed", result["nodes"]["consume"]["error"]
    assert result["nodes"]["produce"]["attempts"] == 2
    logs = run_json(tmp_path, "executions", "logs", result["executionId"], "--node", "consume")
    assert [line["message"] for line in logs] == ["attempt 2"]


def test_a_file_modified_while_the_process_was_down_fails_its_reader_on_resume(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    pipeline, _ = _pipeline(tmp_path, "gated.yaml", GATED.replace("WORK", str(work)))

    with waiting_run(tmp_path, pipeline) as (proc, eid):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    stored = next((tmp_path / "artifacts" / eid / "produce").rglob("report.txt"))
    stored.write_text("rows=0\n")  # edited while nothing ran
    queued = run_cli(tmp_path, "approve", eid, "review", "--wait", "0")
    assert queued.returncode == 0, queued.stderr

    result = run_json(tmp_path, "resume", eid, expect_code=1)

    assert result["nodes"]["review"]["status"] == "completed"
    assert result["nodes"]["consume"]["status"] == "failed"
    assert "was modified after it was stored" in result["nodes"]["consume"]["error"]
    assert str(stored) in result["nodes"]["consume"]["error"]


PARENT = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: parent, version: 1.0.0}
spec:
  inputs: {work: {type: string, required: true}}
  nodes:
    - id: child
      task: {type: pipeline, pipeline: ./child.yaml}
      inputBindings: {work: "{{ pipeline.input.work }}"}
  outputs:
    report: "{{ child.report }}"
"""


def test_a_sub_pipelines_failed_attempts_are_cleaned_with_its_parent(tmp_path: Path) -> None:
    child_body = LEFTOVERS.replace("name: leftovers", "name: child") + (
        '  outputs:\n    report: "{{ flaky.report }}"\n'
    )
    _pipeline(tmp_path, "child.yaml", child_body)
    parent, work = _pipeline(tmp_path, "parent.yaml", PARENT)

    result = run_json(tmp_path, "run", parent, "-i", f"work={work}")

    assert result["status"] == "completed"
    listed = run_json(tmp_path, "executions", "list")
    child_id = next(r["executionId"] for r in listed if r["pipeline"] == "child")
    root = tmp_path / "artifacts" / child_id
    stored = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert stored == [
        "flaky/report/attempt2.txt",
        "items/0/report/item1.txt",
        "items/1/report/item2.txt",
    ]
    assert Path(result["outputs"]["report"]).read_text() == "attempt 2\n"
