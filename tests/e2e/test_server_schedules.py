"""Schedules in a real `whenflow server` (DESIGN.md §12): cycles fire on the clock and
are listed, paused, resumed, started and stopped through the API; a SIGKILLed
server's successor fires no slot twice and finishes the cycle that was running."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import E2E_DIR, REPO_ROOT, cli_argv, cli_env, connect_db, run_cli, run_json
from server_helpers import push, running_server, start, wait_for_file, wait_status

pytestmark = pytest.mark.slow

SHORT_LEASE = {"WHENFLOW_OWNER_LEASE": "1s"}
WAIT_S = 60.0


def _pipeline(name: str, folder: Path, schedule: str, *, wait: bool = False) -> str:
    """One gate node (`servertasks.gate`, tagged with the cycle) under `schedule`."""
    return f"""
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: {name}, version: 1.0.0}}
spec:
  schedules:
    - {schedule}
  nodes:
    - id: a
      task: {{type: python, callable: "servertasks:gate"}}
      inputBindings:
        folder: "{folder}"
        node: a
        tag: "c{{{{ system.cycle }}}}"
        wait: {"true" if wait else "false"}
"""


def _cycles(client: httpx.Client, key: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/schedules/{key}/cycles", params={"limit": 500})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _until(
    read: Callable[[], list[dict[str, Any]]],
    done: Callable[[list[dict[str, Any]]], bool],
    what: str,
) -> list[dict[str, Any]]:
    """Poll an API read until `done` holds, within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = read()
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never {what}: {found}")
        time.sleep(0.1)  # the poll interval of a read through the API


def _completed(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda items: sum(c["status"] == "completed" for c in items) >= count


def test_cycles_fire_pause_resume_trigger_rerun_and_stop_through_the_api(tmp_path: Path) -> None:
    home, work, held = tmp_path / "home", tmp_path / "work", tmp_path / "held"
    for folder in (home, work, held):
        folder.mkdir()
    with running_server(home) as server:
        client = server.client
        push(client, _pipeline("ticker", work, "{id: tick, every: 1s}"))
        listed = client.get("/api/v1/schedules").json()["items"]
        assert [s["id"] for s in listed] == ["ticker:tick"]
        assert len(listed[0]["next"]) == 5
        assert listed[0]["paused"] is False

        key = "ticker:tick"
        fired = _until(lambda: _cycles(client, key), _completed(2), "two cycles completed")
        numbers = sorted(c["cycle"] for c in fired)
        assert numbers == list(range(1, len(numbers) + 1))
        first = next(c for c in fired if c["cycle"] == 1)
        shown = client.get(f"/api/v1/executions/{first['executionId']}").json()
        assert shown["status"] == "completed"
        assert shown["cycle"]["cycle"] == 1
        assert shown["cycle"]["logicalDate"] == first["logicalDate"]
        assert "c1 a" in (work / "calls").read_text().splitlines()

        paused = client.post(f"/api/v1/schedules/{key}/pause").json()
        assert paused["paused"] is True
        assert paused["next"] == []
        at_pause = max(c["cycle"] for c in _cycles(client, key))
        # Three slots pass while paused: a bounded observation window, not a sync.
        window = time.monotonic() + 3.0
        while time.monotonic() < window:
            assert max(c["cycle"] for c in _cycles(client, key)) == at_pause
            time.sleep(0.2)

        triggered = client.post(f"/api/v1/schedules/{key}/cycles", json={})
        assert triggered.status_code == 201, triggered.text
        by_hand = triggered.json()
        assert by_hand["cycle"] == at_pause + 1
        wait_status(client, by_hand["executionId"], "completed")

        rerun = client.post(f"/api/v1/schedules/{key}/cycles", json={"cycle": 1})
        assert rerun.status_code == 201, rerun.text
        again = wait_status(client, rerun.json()["executionId"], "completed")
        assert again["cycle"] == {**shown["cycle"]}
        assert rerun.json()["executionId"] != first["executionId"]
        ones = client.get("/api/v1/executions", params={"schedule": key, "cycle": 1}).json()
        assert {e["executionId"] for e in ones["items"]} == {
            first["executionId"],
            rerun.json()["executionId"],
        }
        assert client.get("/api/v1/executions", params={"schedule": "x:y"}).json()["items"] == []

        resumed = client.post(f"/api/v1/schedules/{key}/resume").json()
        assert resumed["paused"] is False
        assert len(resumed["next"]) == 5
        _until(
            lambda: _cycles(client, key),
            lambda items: max(c["cycle"] for c in items) > at_pause + 1,
            "a cycle fired after the resume",
        )
        missing = client.get("/api/v1/schedules/ticker:nope/cycles")
        assert missing.status_code == 404
        assert (
            client.post(f"/api/v1/schedules/{key}/cycles", json={"cycle": 10_000}).status_code
            == 404
        )
        client.post(f"/api/v1/schedules/{key}/pause")
        cycles_before = client.get(f"/api/v1/schedules/{key}").json()["cycles"]

        # A new version's schedules replace the stored ones, keeping pause and cycle count;
        # publishing an older version afterwards changes nothing.
        newer = _pipeline("ticker", work, "{id: tick, every: 1h}").replace("1.0.0", "1.2.0")
        push(client, newer)
        synced = client.get(f"/api/v1/schedules/{key}").json()
        assert (synced["version"], synced["spec"]["every"]) == ("1.2.0", 3600.0)
        assert synced["paused"] is True
        assert synced["cycles"] == cycles_before
        push(client, _pipeline("ticker", work, "{id: tock, every: 1h}").replace("1.0.0", "1.1.0"))
        assert [s["id"] for s in client.get("/api/v1/schedules").json()["items"]] == [key]
        assert client.get(f"/api/v1/schedules/{key}").json()["version"] == "1.2.0"

        # A cycle that runs until stopped: the hourly schedule's cycle started by hand.
        push(client, _pipeline("holder", held, "{id: hourly, every: 1h}", wait=True))
        started = client.post("/api/v1/schedules/holder:hourly/cycles", json={}).json()
        assert started["cycle"] == 1
        wait_for_file(held / "ready-c1-a")
        stop = client.post(
            "/api/v1/schedules/holder:hourly/cycles/1/stop", json={"reason": "enough"}
        )
        assert stop.status_code == 200, stop.text
        assert stop.json()["executionId"] == started["executionId"]
        wait_status(client, started["executionId"], "cancelled")
        (stopped,) = _cycles(client, "holder:hourly")
        assert stopped["status"] == "cancelled"
        again_stop = client.post("/api/v1/schedules/holder:hourly/cycles/1/stop", json={})
        assert again_stop.status_code == 409


def _fires(home: Path) -> list[tuple[float, int, str]]:
    connection = connect_db(home)
    try:
        rows = connection.execute(
            "SELECT slot, cycle, execution_id FROM schedule_fires WHERE schedule_id = ?",
            ("killed:tick",),
        ).fetchall()
    finally:
        connection.close()
    return [(float(slot), int(cycle), str(eid)) for slot, cycle, eid in rows]


def test_a_sigkilled_server_fires_no_slot_twice_and_finishes_the_running_cycle(
    tmp_path: Path,
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    key = "killed:tick"
    with running_server(home, SHORT_LEASE) as first:
        push(first.client, _pipeline("killed", work, "{id: tick, every: 1s}", wait=True))
        wait_for_file(work / "ready-c1-a")  # cycle 1 runs (and holds: overlap skip)
        (running,) = _cycles(first.client, key)
        assert running["status"] == "running"
        first.process.kill()
        assert first.process.wait(30) == -signal.SIGKILL

    (work / "open").write_text("")
    with running_server(home, SHORT_LEASE) as second:
        wait_status(second.client, running["executionId"], "completed")
        cycles = _until(lambda: _cycles(second.client, key), _completed(3), "three cycles")
        executions = [
            second.client.get(f"/api/v1/executions/{c['executionId']}").json() for c in cycles
        ]
    dates = [e["cycle"]["logicalDate"] for e in executions]
    assert len(dates) == len(set(dates))
    fires = _fires(home)
    assert len({slot for slot, _, _ in fires}) == len(fires)
    assert sorted(cycle for _, cycle, _ in fires) == list(range(1, len(fires) + 1))
    assert len({eid for _, _, eid in fires}) == len(fires)
    calls = (work / "calls").read_text().splitlines()
    assert calls.count("c1 a") == 2  # before the kill, then resumed once: never fired again


def test_the_cli_lists_pauses_resumes_triggers_and_stops_cycles(tmp_path: Path) -> None:
    home, work, held = tmp_path / "home", tmp_path / "work", tmp_path / "held"
    for folder in (home, work, held):
        folder.mkdir()
    code = {"PYTHONPATH": str(E2E_DIR)}  # `servertasks` for the cycles run by the CLI
    key = "daily:hourly"
    with running_server(home) as server:
        push(server.client, _pipeline("daily", work, "{id: hourly, every: 1h}"))
        push(server.client, _pipeline("holds", held, "{id: hourly, every: 1h}", wait=True))

    (listed,) = run_json(home, "schedules", "list", "--pipeline", "daily")
    assert listed["id"] == key
    assert listed["cycles"] == 0
    table = run_cli(home, "schedules", "list")
    assert table.returncode == 0
    assert "holds:hourly" in table.stdout
    assert "active" in table.stdout
    upcoming = run_json(home, "schedules", "next", key, "--count", "3")
    assert len(upcoming) == 3
    assert all(t.endswith(":00:00+00:00") for t in upcoming)  # whole hours, UTC

    assert run_json(home, "schedules", "pause", key)["paused"] is True
    assert run_json(home, "schedules", "next", key) == []
    assert run_json(home, "schedules", "resume", key)["paused"] is False

    first = run_json(home, "schedules", "trigger", key, env=code)
    assert first["cycle"]["cycle"] == 1
    assert first["status"] == "completed"
    again = run_json(home, "schedules", "trigger", key, "--cycle", "1", env=code)
    assert again["cycle"] == {**first["cycle"]}
    assert again["executionId"] != first["executionId"]
    cycles = run_json(home, "cycles", "list", key)
    assert [(c["cycle"], c["status"]) for c in cycles] == [(1, "completed"), (1, "completed")]
    assert {c["executionId"] for c in cycles} == {first["executionId"], again["executionId"]}
    ended = run_cli(home, "cycles", "stop", key, "1")
    assert ended.returncode == 1
    assert "has ended (completed)" in ended.stderr
    unknown = run_cli(home, "cycles", "list", "daily:nope")
    assert unknown.returncode == 1
    assert "no schedule 'daily:nope'" in unknown.stderr

    # A cycle the CLI runs, stopped by another CLI process through its inbox.
    with subprocess.Popen(
        cli_argv("schedules", "trigger", "holds:hourly"),
        cwd=REPO_ROOT,
        env=cli_env(home, code),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as running:
        wait_for_file(held / "ready-c1-a")
        stopped = run_json(home, "cycles", "stop", "holds:hourly", "1", "--reason", "enough")
        out, err = running.communicate(timeout=60)
    assert stopped["applied"] is True
    assert running.returncode == 1, err
    assert "cycle 1: execution" in out
    assert "cancelled" in out
    (cycle,) = run_json(home, "cycles", "list", "holds:hourly")
    assert cycle["status"] == "cancelled"


HOOKED = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: hooked, version: 1.0.0}
spec:
  inputs:
    symbol: {type: string}
    source: {type: string, default: none}
  triggers:
    - webhook: {key: "{{ secret('HOOK_KEY') }}"}
      inputs: {symbol: "{{ body.symbol | upper }}", source: "{{ headers['x-source'] }}"}
  nodes:
    - id: a
      task: {type: python, callable: "servertasks:gate"}
      inputBindings:
        folder: "FOLDER"
        node: a
        tag: "{{ pipeline.input.symbol }}-{{ pipeline.input.source }}"
        wait: false
"""


def test_a_webhook_starts_its_pipeline_with_mapped_inputs_once_per_delivery(
    tmp_path: Path,
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with running_server(home, {"WHENFLOW_SECRET_HOOK_KEY": "k3y-secret"}) as server:
        client = server.client
        push(client, HOOKED.replace("FOLDER", str(work)))
        delivery = {"Idempotency-Key": "delivery-1", "X-Source": "feed"}
        first = client.post("/api/v1/hooks/k3y-secret", json={"symbol": "aapl"}, headers=delivery)
        assert first.status_code == 201, first.text
        (started,) = first.json()["items"]
        assert started["pipeline"] == "hooked"
        assert started["created"] is True
        wait_status(client, started["executionId"], "completed")
        assert (work / "calls").read_text().splitlines() == ["AAPL-feed a"]

        replay = client.post("/api/v1/hooks/k3y-secret", json={"symbol": "aapl"}, headers=delivery)
        assert replay.status_code == 200, replay.text
        assert replay.json()["items"][0]["executionId"] == started["executionId"]
        assert replay.json()["items"][0]["created"] is False
        other = client.post("/api/v1/hooks/k3y-secret", json={"symbol": "msft"}, headers=delivery)
        assert other.status_code == 409
        fresh = client.post("/api/v1/hooks/k3y-secret", json={"symbol": "msft"})
        assert fresh.status_code == 201
        wait_status(client, fresh.json()["items"][0]["executionId"], "completed")
        assert (work / "calls").read_text().splitlines() == ["AAPL-feed a", "MSFT-none a"]

        assert client.post("/api/v1/hooks/wrong", json={"symbol": "x"}).status_code == 404
        missing = client.post("/api/v1/hooks/k3y-secret", json={})
        assert missing.status_code == 422, missing.text
        listed = client.get("/api/v1/executions", params={"pipeline": "hooked"}).json()
        assert len(listed["items"]) == 2


UPSTREAM = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: etl, version: 1.0.0}
spec:
  inputs: {tag: {type: string}}
  nodes:
    - id: a
      task: {type: python, callable: "servertasks:fail_once"}
      inputBindings: {folder: "FOLDER", node: a, tag: x}
  outputs: {path: "/data/{{ pipeline.input.tag }}"}
"""
DOWNSTREAM = """
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: load, version: 1.0.0}
spec:
  inputs: {path: {type: string}, from: {type: string}}
  triggers:
    - after: {pipeline: etl, status: [completed]}
      inputs: {path: "{{ upstream.outputs.path }}", from: "{{ upstream.executionId }}"}
  nodes:
    - id: b
      task: {type: python, callable: "servertasks:gate"}
      inputBindings: {folder: "FOLDER", node: b, tag: "{{ pipeline.input.path }}", wait: false}
"""


def test_an_after_trigger_starts_b_with_a_outputs_when_a_completes_not_when_it_fails(
    tmp_path: Path,
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with running_server(home) as server:
        client = server.client
        push(client, UPSTREAM.replace("FOLDER", str(work)))
        push(client, DOWNSTREAM.replace("FOLDER", str(work)))
        failed = start(client, "etl", {"inputVariables": {"tag": "one"}})
        wait_status(client, failed, "failed")
        completed = start(client, "etl", {"inputVariables": {"tag": "two"}})
        wait_status(client, completed, "completed")

        def loads() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = client.get(
                "/api/v1/executions", params={"pipeline": "load"}
            ).json()["items"]
            return found

        (load,) = _until(loads, lambda items: len(items) >= 1, "load started")
        shown = wait_status(client, load["executionId"], "completed")
        variables = client.get(f"/api/v1/executions/{load['executionId']}/variables").json()
        inputs = {
            v["name"]: v["value"] for v in variables["items"] if v["scope"] == "pipeline.input"
        }
        assert inputs == {"path": "/data/two", "from": completed}
        assert shown["nodes"]["b"]["status"] == "completed"
        assert "/data/two b" in (work / "calls").read_text().splitlines()
        assert len(loads()) == 1  # the failed run started nothing
