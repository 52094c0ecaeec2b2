"""The server side of benchmarks/api.py: a `whenflow server` subprocess, a scratch
PostgreSQL database, the status board fed by the server's status stream, the
starter that counts failed starts, and CPU accounting of a process.

Figures are printed by api.py, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STARTUP_S = 60.0
SETTLE_S = 300.0  # how long to wait for the executions of one phase to reach a status
PG_HOST, PG_PORT, PG_ADMIN_DB, PG_USERS = "127.0.0.1", 5432, "test", ("postgres", "root")
TERMINAL = frozenset({"completed", "failed", "stopped", "cancelled"})


# ------------------------------------------------------------------ the server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path


@contextlib.contextmanager
def running_server(home: Path, database_url: str | None) -> Iterator[Server]:
    """`whenflow server` on a free loopback port with WHENFLOW_HOME=home; killed at the end."""
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WHENFLOW_DATABASE_URL", "WHENFLOW_ARTIFACTS_URL")
    }
    env["WHENFLOW_HOME"] = str(home)
    if database_url:
        env["WHENFLOW_DATABASE_URL"] = database_url
    log = home / "server.log"
    argv = [sys.executable, "-m", "whenflow.cli.main", "server", "--port", str(port)]
    argv += ["--code-path", str(home)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_S
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        while True:
            if server.process.poll() is not None:
                raise SystemExit(f"the server exited:\n{server.log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not answer in {STARTUP_S}s")
            time.sleep(0.05)  # the poll interval of a port that is not listening yet


def rss_from_proc(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.asynccontextmanager
async def scratch_postgres() -> AsyncIterator[str]:
    """A new PostgreSQL database on the local server, dropped at the end; its URL."""
    import asyncpg  # type: ignore[import-untyped]

    name = f"w2bench_{uuid.uuid4().hex[:10]}"
    errors = []
    for user in (os.environ.get("WHENFLOW_TEST_PG_USER"), *PG_USERS):
        if not user:
            continue
        try:
            conn = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=user, database=PG_ADMIN_DB, timeout=5
            )
        except Exception as exc:
            errors.append(f"{user}: {exc}")
            continue
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        break
    else:
        raise SystemExit("PostgreSQL accepts none of the users: " + "; ".join(errors))
    try:
        yield f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=PG_ADMIN_DB)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


# ------------------------------------------------------- following the statuses


@dataclass
class StatusBoard:
    """When (time.monotonic) each execution was seen in each status on the stream."""

    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def follow(self, client: httpx.AsyncClient, connected: asyncio.Event) -> None:
        async with client.stream("GET", "/api/v1/events/stream", timeout=None) as response:
            response.raise_for_status()
            connected.set()
            data = ""
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    change = json.loads(data)
                    data = ""
                    now = time.monotonic()
                    statuses = self.seen.setdefault(change["executionId"], {})
                    statuses.setdefault(change["status"], now)
                    async with self.changed:
                        self.changed.notify_all()

    def reached(self, execution_id: str, statuses: frozenset[str]) -> float | None:
        times = [t for s, t in self.seen.get(execution_id, {}).items() if s in statuses]
        return min(times) if times else None

    async def wait_all(self, ids: Sequence[str], statuses: frozenset[str]) -> int:
        """Waits until every id reached one of `statuses` (or SETTLE_S); how many did not."""

        pending = set(ids)

        def settled() -> bool:
            pending.difference_update([i for i in pending if self.reached(i, statuses) is not None])
            return not pending

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_S), self.changed:
                await self.changed.wait_for(settled)
        return len(pending)


@dataclass
class Starter:
    """Starts executions like the seed request (`{"version": ...}`), counting failures.

    With `keys`, every start carries an Idempotency-Key and a connection error is
    retried with the same key (one execution at most); without, it is a failure."""

    client: httpx.AsyncClient
    keys: bool
    retries: int = 0
    failures: list[str] = field(default_factory=list)

    async def __call__(self, pipeline: str) -> str | None:
        headers = {"Idempotency-Key": uuid.uuid4().hex} if self.keys else {}
        for attempt in range(3 if self.keys else 1):
            try:
                response = await self.client.post(
                    f"/api/v1/pipelines/{pipeline}/start",
                    json={"version": "1.0.0"},
                    headers=headers,
                )
            except httpx.TransportError as exc:
                if not self.keys or attempt == 2:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    return None
                self.retries += 1
                continue
            if response.status_code == 201:
                return str(response.json()["executionId"])
            self.failures.append(f"{response.status_code} {response.text[:200]}")
            return None
        return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_used(pid: int, executions: Callable[[], int]) -> Iterator[None]:
    """Prints the CPU the server and this client spent in the block, per execution."""
    server0, client0 = _cpu_seconds(pid), time.process_time()
    yield
    server, client = _cpu_seconds(pid) - server0, time.process_time() - client0
    count = max(executions(), 1)
    print(
        f"      CPU: server {server:.2f} s ({server / count * 1000:.1f} ms an execution), "
        f"this client {client:.2f} s ({client / count * 1000:.1f} ms)"
    )


async def in_parallel(workers: int, count: int, job: Callable[[int], Awaitable[None]]) -> None:
    """Runs job(0..count-1) on `workers` concurrent workers."""
    next_index = iter(range(count))

    async def worker() -> None:
        for index in next_index:
            await job(index)

    await asyncio.gather(*(worker() for _ in range(workers)))


@contextlib.contextmanager
def log_tail_on_error(server: Server) -> Iterator[None]:
    try:
        yield
    except BaseException:
        tail = server.log.read_text(errors="replace").splitlines()[-40:]
        print("the server's log ends with:\n" + "\n".join(tail), file=sys.stderr)
        raise
