"""What `whenflow server` holds while it runs: the store, the registry, the executions."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from whenflow.engine.orchestrator import Orchestrator
from whenflow.services.execution_host import DEFAULT_GRACE_S, ExecutionHost
from whenflow.services.executions import ExecutionService
from whenflow.services.pipelines import default_runner
from whenflow.services.program_cache import ProgramCache
from whenflow.services.registry import RegistryService
from whenflow.services.server_schedules import ServerSchedules
from whenflow.services.settings import Settings
from whenflow.services.start_triggers import AfterStarts


@dataclass(frozen=True, slots=True)
class ServerParts:
    host: ExecutionHost
    registry: RegistryService
    programs: ProgramCache
    schedules: ServerSchedules


def use_code_path(code_path: Path) -> None:
    """Import task code (`callable: pkg.mod:fn`) from `code_path`, first, in this
    process and in the task processes it starts (PYTHONPATH)."""
    folder = str(code_path.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    current = os.environ.get("PYTHONPATH")
    parts = current.split(os.pathsep) if current else []
    if folder not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([folder, *parts])


@asynccontextmanager
async def open_server(
    settings: Settings | None = None,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    inbox_poll_s: float | None = None,
    observers: Sequence[Callable[[Orchestrator], None]] = (),
) -> AsyncIterator[ServerParts]:
    """Open the store, resume what this process may own, then fire the schedules' slots,
    and run until the block ends; then stop the scheduler and shut down gracefully
    (running attempts get `grace_s` seconds).

    `observers` are called with every execution the server runs (metrics, traces).
    """
    runner = default_runner()
    try:
        async with ExecutionService.open(settings, runner=runner) as service:
            registry = RegistryService(service.store.engine, runner)
            options = {} if inbox_poll_s is None else {"inbox_poll_s": inbox_poll_s}
            host = ExecutionHost(
                service, grace_s=grace_s, known_tasks=registry.published_tasks, **options
            )
            host.observers.extend(observers)
            async with host:
                programs = ProgramCache(registry)
                after = AfterStarts(host, registry, programs)
                host.result_listeners.append(after.on_result)
                try:
                    async with ServerSchedules(host, registry, programs) as schedules:
                        registry.on_published = schedules.published
                        yield ServerParts(host, registry, programs, schedules)
                finally:
                    await after.close()
    finally:
        runner.close()
