"""A real `whenflow server` subprocess on a free loopback port, for the e2e tests.

`running_server(home)` starts it (task code from `--code-path tests/e2e`, the
repository root as working directory so `examples.*` imports too), waits for
`/health` to answer, and stops it at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cli_helpers import E2E_DIR, EXAMPLES, REPO_ROOT, cli_argv, cli_env

STARTUP_S = 60.0
FEATURES_SEED = {
    "version": "1.0.0",
    "inputVariables": {"start_date": "2025-01-01", "end_date": "2025-01-31"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    client: httpx.Client
    home: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


@contextlib.contextmanager
def running_server(home: Path, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    port = free_port()
    argv = cli_argv("server", "--port", str(port), "--code-path", str(E2E_DIR))
    log = (home / f"server-{port}.log").open("w")
    with (
        log,
        subprocess.Popen(
            argv, cwd=REPO_ROOT, env=cli_env(home, env), stdout=log, stderr=subprocess.STDOUT,
            text=True,
        ) as process,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client,
    ):  # fmt: skip
        server = Server(process, f"http://127.0.0.1:{port}", client, home)
        try:
            _wait_healthy(server, home / f"server-{port}.log")
            yield server
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(30)


def _wait_healthy(server: Server, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while True:
        if server.process.poll() is not None:
            raise AssertionError(
                f"the server exited {server.process.returncode}:\n{log.read_text()}"
            )
        try:
            if server.client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not answer in {STARTUP_S}s:\n{log.read_text()}")
        time.sleep(0.05)  # the poll interval of a port that is not listening yet


def push(client: httpx.Client, path: Path | str, *, kind: str = "pipelines") -> dict[str, Any]:
    text = path.read_text() if isinstance(path, Path) else path
    response = client.post(
        f"/api/v1/{kind}",
        params={"publish": "true"},
        content=text.encode(),
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def push_examples(client: httpx.Client) -> None:
    push(client, EXAMPLES / "tasks" / "transform.yaml", kind="tasks")
    push(client, EXAMPLES / "feature_engineering.yaml")
    push(client, EXAMPLES / "approval_gate.yaml")


def start(client: httpx.Client, name: str, body: Mapping[str, Any] | None = None) -> str:
    response = client.post(f"/api/v1/pipelines/{name}/start", json=dict(body or {}))
    assert response.status_code == 201, response.text
    return str(response.json()["executionId"])


def sse(client: httpx.Client, path: str, **params: Any) -> Iterator[tuple[str, str, Any]]:
    """(event, id, data) of each SSE frame until the server closes the stream."""
    with client.stream("GET", path, params=params, timeout=60.0) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event, event_id, data = "", "", ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                yield event, event_id, json.loads(data)
                event, event_id, data = "", "", ""


def follow_to_end(client: httpx.Client, execution_id: str, since: int = 0) -> list[Any]:
    """Every event of the execution's stream (it ends with the execution)."""
    return [
        data
        for _, _, data in sse(
            client, f"/api/v1/executions/{execution_id}/events/stream", since=since
        )
    ]


def wait_for_file(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.02)  # the poll interval of a file a task writes


def wait_status(client: httpx.Client, execution_id: str, wanted: str, timeout: float = 60.0) -> Any:
    """The execution once its status is `wanted` (read through the API)."""
    deadline = time.monotonic() + timeout
    while True:
        found = client.get(f"/api/v1/executions/{execution_id}").json()
        if found.get("status") == wanted:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"execution {execution_id} is {found.get('status')}, not {wanted}")
        time.sleep(0.05)  # the poll interval of a status read through the API


def gate_pipeline(name: str, folder: Path, tail: str = "", *, free: str = "") -> str:
    """a -> b -> c, gates that wait for folder/open (but the node named `free`);
    `tail` adds YAML nodes."""
    node = '{type: python, callable: "servertasks:gate"}'
    tag = "{{ pipeline.input.tag }}"
    a_waits = "false" if free == "a" else "true"
    return f"""
apiVersion: whenflow/v1
kind: Pipeline
metadata: {{name: {name}, version: 1.0.0}}
spec:
  inputs:
    tag: {{type: string, default: x}}
  nodes:
    - id: a
      task: {node}
      inputBindings: {{folder: "{folder}", node: a, tag: "{tag}", wait: {a_waits}}}
    - id: b
      startWhen: event:a.completed
      task: {node}
      inputBindings: {{folder: "{folder}", node: b, tag: "{{{{ pipeline.input.tag }}}}"}}
    - id: c
      startWhen: event:b.completed
      task: {node}
      inputBindings: {{folder: "{folder}", node: c, tag: "{{{{ pipeline.input.tag }}}}"}}
{tail}"""
