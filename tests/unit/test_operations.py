"""`/health`, `/ready`, `/stats` and `/metrics` over real stores and a real pipeline run."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from auth_app import token_service
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from three_nodes import run_three_nodes

from whenflow.api.auth import install_auth_errors
from whenflow.api.operations import operations_router
from whenflow.domain.auth import Role
from whenflow.services.metrics import Metrics
from whenflow.services.server_stats import DatabaseProbe, LoopLagMonitor
from whenflow.services.tokens import TokenService
from whenflow.storage.database import make_engine


class FixedCounts:
    """Stands in for the server's live counts (the integrator's StatsSource)."""

    def __init__(self, executions: int, attempts: int, queued: int) -> None:
        self.counts = (executions, attempts, queued)

    def running_executions(self) -> int:
        return self.counts[0]

    def running_attempts(self) -> int:
        return self.counts[1]

    def queued_attempts(self) -> int:
        return self.counts[2]


def ops_app(
    tokens: TokenService, probe: DatabaseProbe, metrics: Metrics, monitor: LoopLagMonitor
) -> FastAPI:
    app = FastAPI()
    install_auth_errors(app)
    app.state.tokens = tokens
    app.include_router(
        operations_router(probe=probe, stats=FixedCounts(3, 5, 2), metrics=metrics, monitor=monitor)
    )
    return app


def http(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://whenflow.test")


@pytest.fixture
async def tokens(tmp_path: Path) -> AsyncIterator[TokenService]:
    async with token_service(tmp_path) as service:
        yield service


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_ready_is_200_with_a_database_and_503_without(
    tokens: TokenService, tmp_path: Path
) -> None:
    good = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'ok.db'}")
    gone = make_engine(f"postgresql+asyncpg://whenflow@127.0.0.1:{closed_port()}/nowhere")
    viewer = {"Authorization": f"Bearer {(await tokens.create(Role.VIEWER)).token}"}
    try:
        async with http(ops_app(tokens, DatabaseProbe(good), Metrics(), LoopLagMonitor())) as c:
            ok = await c.get("/ready", headers=viewer)
            anonymous = await c.get("/ready")
        began = time.monotonic()
        async with http(ops_app(tokens, DatabaseProbe(gone), Metrics(), LoopLagMonitor())) as c:
            down = await c.get("/ready", headers=viewer)
            health = await c.get("/health")
        took = time.monotonic() - began
    finally:
        await good.dispose()
        await gone.dispose()
    assert ok.status_code == 200
    assert ok.json() == {"status": "ready"}
    assert anonymous.status_code == 401
    assert down.status_code == 503
    error = down.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"].startswith("cannot reach the database")
    assert down.headers["retry-after"] == "1"
    assert health.status_code == 200  # alive even when not ready
    assert took < 10


async def test_ready_gives_up_after_its_timeout(tmp_path: Path) -> None:
    """A database that accepts the connection and never answers: 503 within the timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts into the backlog, never speaks
    engine = make_engine(f"postgresql+asyncpg://whenflow@127.0.0.1:{silent.getsockname()[1]}/x")
    try:
        began = time.monotonic()
        problem = await DatabaseProbe(engine).problem(timeout_s=0.5)
        took = time.monotonic() - began
    finally:
        await engine.dispose()
        silent.close()
    assert problem == "the database did not answer within 0.5 s"
    assert took < 5


async def test_stats_reports_counts_lag_cpu_and_memory(
    tokens: TokenService, tmp_path: Path
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'ok.db'}")
    viewer = {"Authorization": f"Bearer {(await tokens.create(Role.VIEWER)).token}"}
    try:
        async with LoopLagMonitor(interval_s=0.05) as monitor:
            app = ops_app(tokens, DatabaseProbe(engine), Metrics(), monitor)
            async with http(app) as c:
                await asyncio.wait_for(monitor.next_sample(), 10)  # now on its timer
                asyncio.get_running_loop().call_soon(time.sleep, 0.3)  # a callback blocks
                lag = await asyncio.wait_for(monitor.next_sample(), 10)
                stats = (await c.get("/stats", headers=viewer)).json()
                refused = await c.get("/stats")
    finally:
        await engine.dispose()
    assert refused.status_code == 401
    assert stats["executions"] == {"running": 3}
    assert stats["attempts"] == {"running": 5, "queued": 2}
    assert lag >= 0.2
    assert stats["loop"]["maxLagSeconds"] >= lag
    assert stats["loop"]["lagSeconds"] is not None
    process = stats["process"]
    assert process["rssBytes"] > 10 * 1024 * 1024  # a Python with FastAPI loaded
    assert process["maxRssBytes"] >= process["rssBytes"] // 2
    assert process["cpuSeconds"] > 0
    assert process["cpuPercent"] is not None
    assert process["threads"] >= 1
    assert stats["uptimeSeconds"] >= 0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_a_real_run(tokens: TokenService, tmp_home: Path) -> None:
    metrics = Metrics()
    results = await run_three_nodes(
        tmp_home, [("good", 0), ("good", 0), ("bad", 3)], metrics.listener
    )
    assert [r.status.value for r in results] == ["completed", "completed", "failed"]
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_home / 'runs.db'}")
    viewer = {"Authorization": f"Bearer {(await tokens.create(Role.VIEWER)).token}"}
    try:
        async with http(ops_app(tokens, DatabaseProbe(engine), metrics, LoopLagMonitor())) as c:
            response = await c.get("/metrics", headers=viewer)
            refused = await c.get("/metrics")
    finally:
        await engine.dispose()
    assert refused.status_code == 401
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("whenflow_executions_started_total", (("pipeline", "good"),))] == 2
    assert found[("whenflow_executions_started_total", (("pipeline", "bad"),))] == 1
    finished = "whenflow_executions_finished_total"
    assert found[(finished, (("pipeline", "good"), ("status", "completed")))] == 2
    assert found[(finished, (("pipeline", "bad"), ("status", "failed")))] == 1
    attempts = "whenflow_node_attempt_duration_seconds_count"
    assert found[(attempts, (("outcome", "completed"), ("pipeline", "good")))] == 6
    assert found[(attempts, (("outcome", "completed"), ("pipeline", "bad")))] == 1  # a
    assert found[(attempts, (("outcome", "failed"), ("pipeline", "bad")))] == 1  # b
    latency = "whenflow_dispatch_latency_seconds_count"
    assert found[(latency, (("pipeline", "good"),))] == 6  # a, b, c of both runs
    assert found[(latency, (("pipeline", "bad"),))] == 2  # c never starts
    assert 0 < found[("whenflow_dispatch_latency_seconds_sum", (("pipeline", "good"),))] < 5
    assert found[("whenflow_running_executions", ())] == 3
    assert found[("whenflow_running_attempts", ())] == 5
    assert found[("whenflow_queue_depth", ())] == 2
    assert found[("process_resident_memory_bytes", ())] > 0


def test_inbox_lag_and_a_listener_that_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    from whenflow.domain.events import Event

    metrics = Metrics()
    metrics.observe_inbox_lag(0.2)
    metrics.observe_inbox_lag(-1.0)  # clocks apart: counted as 0
    record = metrics.listener("p")
    record(Event("e1", "x", 1, "a.started", "a", 10.0, {"attempt": "not a number"}))
    record(Event("e2", "x", 2, "a.completed", "a", "late"))  # type: ignore[arg-type]
    found = samples(metrics.exposition()[0].decode())  # the TypeError above was logged
    assert (
        "whenflow_node_attempt_duration_seconds_count",
        (("outcome", "completed"), ("pipeline", "p")),
    ) not in found
    assert found[("whenflow_inbox_lag_seconds_count", ())] == 2
    assert found[("whenflow_inbox_lag_seconds_sum", ())] == pytest.approx(0.2)
    assert "could not record metrics for a.completed" in caplog.text


async def test_the_wiring_recipe_over_a_real_server(tokens: TokenService, tmp_path: Path) -> None:
    """The app built as docs/server.md's integration notes say, served by uvicorn."""
    from contextlib import asynccontextmanager

    from served_app import raw_get, served

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'ok.db'}")
    monitor = LoopLagMonitor(interval_s=0.05)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with monitor:
            yield

    app = FastAPI(lifespan=lifespan)
    install_auth_errors(app)
    app.state.tokens = tokens
    app.include_router(
        operations_router(
            probe=DatabaseProbe(engine),
            stats=FixedCounts(0, 0, 0),
            metrics=Metrics(),
            monitor=monitor,
        )
    )
    admin = (await tokens.create(Role.ADMIN)).token
    try:
        async with served(app) as (host, port):
            await asyncio.wait_for(monitor.next_sample(), 10)  # the lifespan started it
            health = await raw_get(host, port, "/health")
            stats = await raw_get(host, port, "/stats", {"Authorization": f"Bearer {admin}"})
            metrics = await raw_get(host, port, "/metrics")
    finally:
        await engine.dispose()
    assert health[0] == 200
    assert stats[0] == 200
    assert b'"lagSeconds":' in stats[1]
    assert metrics[0] == 401


async def test_operations_routes_need_viewer_but_health(
    tokens: TokenService, tmp_path: Path
) -> None:
    from whenflow.api.auth import route_roles, unguarded_routes

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'ok.db'}")
    try:
        app = ops_app(tokens, DatabaseProbe(engine), Metrics(), LoopLagMonitor())
        assert route_roles(app) == {
            ("GET", "/health"): None,
            ("GET", "/ready"): Role.VIEWER,
            ("GET", "/stats"): Role.VIEWER,
            ("GET", "/metrics"): Role.VIEWER,
        }
        assert unguarded_routes(app) == []
    finally:
        await engine.dispose()
