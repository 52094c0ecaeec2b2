"""The FastAPI application of `whenflow server` (DESIGN.md §9, §11).

`create_app()` builds it; its lifespan opens the store and the execution host
(which resumes unfinished executions) and, at shutdown, lets running attempts
finish within the grace period. OpenAPI is at `/openapi.json`, its pages at
`/docs`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from whenflow.api import (
    routes_executions,
    routes_hooks,
    routes_registry,
    routes_schedules,
    routes_streams,
)
from whenflow.api.auth import install_auth_errors
from whenflow.api.bodies import BodyLimit, NoNulCharacters
from whenflow.api.errors import install_handlers
from whenflow.api.operations import operations_router
from whenflow.services.metrics import Metrics
from whenflow.services.server import open_server
from whenflow.services.server_stats import DatabaseProbe, LoopLagMonitor, OrchestratorCounts
from whenflow.services.settings import Settings
from whenflow.services.start_triggers import WebhookStarts
from whenflow.services.tokens import TokenService
from whenflow.services.tracing import tracing_from_env


def create_app(settings: Settings | None = None, *, inbox_poll_s: float | None = None) -> FastAPI:
    """The API over the store `settings` name (default: from the environment).

    `settings` also gives the body limit (`api_max_body_bytes`, 413 above it)
    and the shutdown grace period; `inbox_poll_s` is how often the one inbox
    reader looks for requests that other processes stored.

    Raises:
        InvalidSetting: a `WHENFLOW_*` variable cannot be read.
    """
    from whenflow import __version__

    settings = settings or Settings.from_env()
    grace_s = settings.shutdown_grace_s
    metrics, monitor = Metrics(), LoopLagMonitor()
    tracer = tracing_from_env()

    def observe(orchestrator: Any) -> None:
        pipeline = orchestrator.program.definition.name
        orchestrator.add_listener(metrics.listener(pipeline))
        if tracer is not None:
            orchestrator.add_listener(tracer.listener(pipeline))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with (
                monitor,
                open_server(
                    settings, grace_s=grace_s, inbox_poll_s=inbox_poll_s, observers=[observe]
                ) as parts,
            ):
                app.state.host = parts.host
                app.state.registry = parts.registry
                app.state.programs = parts.programs
                app.state.schedules = parts.schedules
                app.state.hooks = WebhookStarts(parts.host, parts.registry, parts.programs)
                app.state.tokens = TokenService(parts.host.service.store.engine)
                yield
        finally:
            if tracer is not None:
                tracer.shutdown()

    app = FastAPI(
        title="whenflow",
        version=__version__,
        summary="Pipelines whose nodes say when they run: registry, executions, live events.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(NoNulCharacters)
    install_handlers(app)
    install_auth_errors(app)
    app.include_router(routes_registry.router, tags=["registry"])
    app.include_router(routes_executions.router, tags=["executions"])
    app.include_router(routes_streams.router, tags=["streams"])
    app.include_router(routes_schedules.router, tags=["schedules"])
    app.include_router(routes_hooks.router, tags=["triggers"])
    app.include_router(
        operations_router(
            probe=DatabaseProbe(lambda: app.state.host.service.store.engine),
            stats=OrchestratorCounts(lambda: app.state.host.orchestrators()),
            metrics=metrics,
            monitor=monitor,
        )
    )
    return app
