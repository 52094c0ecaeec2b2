"""Operations routes: `/health`, `/ready`, `/stats`, `/metrics` (DESIGN.md §11).

`/health` is the one route without auth (DESIGN.md §10: exempt by its exact
path, which is simply the one route declared without `require`); the others
need the viewer role like any read.

- `GET /health`: 200 `{"status": "ok"}` while the process serves requests.
- `GET /ready`: 200 `{"status": "ready"}`, or 503 in the API error shape while
  `SELECT 1` fails or takes over 2 s.
- `GET /stats`: 200 `services.server_stats.server_stats(...)`: executions,
  attempts, loop lag, CPU, memory.
- `GET /metrics`: 200 the Prometheus text exposition of `services.metrics.Metrics`.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from whenflow.api.auth import require
from whenflow.domain.auth import Role
from whenflow.services.metrics import Metrics, StatsSource
from whenflow.services.server_stats import DatabaseProbe, LoopLagMonitor, server_stats


def operations_router(
    *,
    probe: DatabaseProbe,
    stats: StatsSource,
    metrics: Metrics,
    monitor: LoopLagMonitor,
    started_at: float | None = None,
) -> APIRouter:
    """The four routes, reading the server's parts given here.

    `monitor` must be started on the server's loop (in the app's lifespan:
    `async with monitor:`); until it is, `/stats` shows no lag and no CPU
    percent. `metrics.track(stats)` is called here, so the gauges follow `stats`.
    """
    router = APIRouter(tags=["operations"])
    viewer = [Depends(require(Role.VIEWER))]
    since = time.time() if started_at is None else started_at
    metrics.track(stats)

    @router.get("/health", summary="The process is alive (no auth)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/ready",
        dependencies=viewer,
        summary="The database answers (503 while it does not)",
        responses={503: {"description": "the database is unreachable"}},
    )
    async def ready() -> Any:
        problem = await probe.problem()
        if problem is None:
            return {"status": "ready"}
        return JSONResponse(
            {"error": {"code": "unavailable", "message": problem, "details": {}}},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @router.get(
        "/stats", dependencies=viewer, summary="Executions, attempts, loop lag, CPU, memory"
    )
    async def stats_route() -> dict[str, Any]:
        return server_stats(stats, monitor, since)

    @router.get(
        "/metrics",
        dependencies=viewer,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics_route() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return router
