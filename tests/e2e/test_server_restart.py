"""A `whenflow server` killed (SIGKILL) or stopped (SIGTERM) while executions run:
the next server resumes them, and no node whose completion was durable runs again."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import run_cli
from server_helpers import gate_pipeline, push, running_server, start, wait_for_file, wait_status

pytestmark = pytest.mark.slow

SHORT_LEASE = {"WHENFLOW_OWNER_LEASE": "1s"}
TAGS = ["t0", "t1", "t2"]


def _calls(folder: Path) -> Counter[str]:
    return Counter((folder / "calls").read_text().splitlines())


def _wait_for_log(log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared in {log}:\n{log.read_text()}")
        time.sleep(0.02)  # the poll interval of a log file the server writes


def test_a_killed_server_resumes_its_executions_and_completed_nodes_do_not_run_again(
    tmp_path: Path,
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with running_server(home, SHORT_LEASE) as first:
        push(first.client, gate_pipeline("restart_gate", work, free="a"))
        ids = {
            tag: start(first.client, "restart_gate", {"inputVariables": {"tag": tag}})
            for tag in TAGS
        }
        for tag, execution_id in ids.items():
            wait_for_file(work / f"ready-{tag}-b")
            shown = first.client.get(f"/api/v1/executions/{execution_id}").json()
            assert shown["nodes"]["a"]["status"] == "completed"  # durable before the kill
        first.process.kill()
        assert first.process.wait(30) == -signal.SIGKILL

    (work / "open").write_text("")
    with running_server(home, SHORT_LEASE) as second:
        for execution_id in ids.values():
            shown = wait_status(second.client, execution_id, "completed")
            assert {n: shown["nodes"][n]["status"] for n in "abc"} == dict.fromkeys(
                "abc", "completed"
            )
            events = second.client.get(f"/api/v1/executions/{execution_id}/events").json()["items"]
            types = Counter(e["eventType"] for e in events)
            assert types["a.started"] == 1  # the completed node did not run again
            assert types["a.completed"] == 1
            assert types["pipeline.resumed"] == 1
            assert types["c.completed"] == 1
    calls = _calls(work)
    for tag in TAGS:
        assert calls[f"{tag} a"] == 1
        assert calls[f"{tag} b"] == 2  # the attempt the kill cut, and its successor
        assert calls[f"{tag} c"] == 1


def test_sigterm_lets_the_running_attempt_finish_and_the_next_server_goes_on(
    tmp_path: Path,
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with running_server(home, {"WHENFLOW_SHUTDOWN_GRACE": "60s"}) as first:
        push(first.client, gate_pipeline("graceful_gate", work, free="a"))
        execution_id = start(first.client, "graceful_gate", {"inputVariables": {"tag": "g"}})
        wait_for_file(work / "ready-g-b")
        path = f"/api/v1/executions/{execution_id}/events/stream"
        with first.client.stream("GET", path, timeout=60.0) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("event: pipeline.started")
            first.process.send_signal(signal.SIGTERM)
            _wait_for_log(home / f"server-{first.url.rsplit(':', 1)[1]}.log", "Shutting down")
            (work / "open").write_text("")  # b may finish now, within the grace period
            # The stream ends cleanly (a complete response: no RemoteProtocolError),
            # not cut by uvicorn's shutdown timeout.
            seen = list(lines)
        assert "event: pipeline.completed" not in seen
        assert first.process.wait(60) == 0

    with running_server(home) as second:
        shown = wait_status(second.client, execution_id, "completed")
        events = second.client.get(f"/api/v1/executions/{execution_id}/events").json()["items"]
    types = Counter(e["eventType"] for e in events)
    assert types["b.started"] == 1  # b finished in the grace period: not run again
    assert types["c.started"] == 1
    assert types["pipeline.resumed"] == 1
    assert shown["nodes"]["b"]["attempts"] == 1
    started_c = next(e["seq"] for e in events if e["eventType"] == "c.started")
    resumed = next(e["seq"] for e in events if e["eventType"] == "pipeline.resumed")
    assert started_c > resumed  # c was not admitted while the first server stopped
    assert _calls(work) == Counter({"g a": 1, "g b": 1, "g c": 1})


def test_a_bad_setting_or_code_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad_body = run_cli(tmp_path, "server", "--port", "1", env={"WHENFLOW_API_MAX_BODY": "lots"})
    assert bad_body.returncode == 2
    assert bad_body.stderr.strip().splitlines() == [
        "error: WHENFLOW_API_MAX_BODY='lots' is not a number of bytes; set a whole number"
    ]
    missing = run_cli(tmp_path, "server", "--code-path", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "is not a directory" in missing.stderr
    assert "Traceback" not in missing.stderr
