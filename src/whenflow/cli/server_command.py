"""`whenflow server`: the API and many executions in one long-running process.

SIGTERM (or Ctrl-C) stops it gracefully: it stops accepting connections and
ends the live streams, running attempts get `WHENFLOW_SHUTDOWN_GRACE` seconds
(default 30 s) to finish, and whatever still runs stays resumable; the next
server resumes it.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from whenflow.cli.common import EXIT_INVALID, fail

if TYPE_CHECKING:
    import uvicorn

    from whenflow.services.settings import Settings


def server(
    host: Annotated[
        str, typer.Option("--host", metavar="ADDRESS", help="The address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="The TCP port to listen on.")
    ] = 8080,
    code_path: Annotated[
        Path | None,
        typer.Option(
            "--code-path",
            metavar="DIR",
            help="Where task code (`callable: pkg.mod:fn`) is imported from "
            "(default: the working directory).",
        ),
    ] = None,
) -> None:
    """Run the REST API and the executions of the registry's pipelines (OpenAPI at /docs)."""
    import uvicorn

    from whenflow.domain.errors import StoreSettingsError
    from whenflow.services.server import use_code_path
    from whenflow.services.settings import Settings

    folder = code_path or Path.cwd()
    if not folder.is_dir():
        fail(f"error: --code-path {folder} is not a directory", EXIT_INVALID)
    use_code_path(folder)
    if not 0 < port < 65536:
        fail(f"error: --port {port} is not a TCP port (1-65535)", EXIT_INVALID)
    try:
        settings = Settings.from_env()  # a bad WHENFLOW_* setting: one line and exit 2
    except StoreSettingsError as exc:
        fail(f"error: {exc}", EXIT_INVALID)
    _refuse_unguarded_bind(host, settings)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        "whenflow.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    _serve(config)


def _refuse_unguarded_bind(host: str, settings: Settings) -> None:
    """Exit 2 before binding beyond loopback while the database holds no API token."""
    import asyncio

    from whenflow.domain.errors import WhenflowError
    from whenflow.services.bind_policy import check_server_bind, is_loopback
    from whenflow.services.tokens import TokenService

    if is_loopback(host):
        return

    async def check() -> None:
        async with TokenService.open(settings) as tokens:
            await check_server_bind(host, tokens)

    try:
        asyncio.run(check())
    except WhenflowError as exc:
        fail(f"error: {exc}", EXIT_INVALID)


def _serve(config: uvicorn.Config) -> None:
    """Run uvicorn; its first SIGTERM/SIGINT also ends the live streams at once (they
    would hold the shutdown), and a graceful shutdown exits with status 0."""
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        _loop: asyncio.AbstractEventLoop | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()  # not raised again after the shutdown
            host = getattr(_application(self.config).state, "host", None)
            if host is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(host.stop_accepting)

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

    Server(config).run()


def _application(config: uvicorn.Config) -> Any:
    """The application under uvicorn's middleware wrappers (it has the `state`)."""
    app = config.loaded_app
    while app is not None and not hasattr(app, "state") and hasattr(app, "app"):
        app = app.app
    return app if hasattr(app, "state") else SimpleNamespace(state=None)
