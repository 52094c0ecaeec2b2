"""whenflow: pipelines whose nodes say when they run.

    import whenflow

    @whenflow.task
    def extract(start: str, end: str) -> dict: ...

    result = whenflow.run("pipeline.yaml", inputs={"start": "2024-01-01"})

    with whenflow.Client("http://127.0.0.1:8080", token="...") as client:
        started = client.start("etl", {"start": "2024-01-01"})
        client.wait(started["executionId"])

Attributes are imported lazily, so `import whenflow` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"
__all__ = ["ApiError", "AsyncClient", "Client", "__version__", "run", "task"]

if TYPE_CHECKING:
    from whenflow.api_run import run
    from whenflow.client import ApiError, AsyncClient, Client
    from whenflow.executors.task_decorator import task


def __getattr__(name: str) -> Any:
    if name == "run":
        from whenflow.api_run import run

        return run
    if name == "task":
        from whenflow.executors.task_decorator import task

        return task
    if name in ("Client", "AsyncClient", "ApiError"):
        from whenflow import client

        return getattr(client, name)
    raise AttributeError(f"module 'whenflow' has no attribute {name!r}")
