"""What the commands share: exit codes, errors on stderr, calls into the store."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, NoReturn

import typer

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout.")
ExecutionIdArgument = typer.Argument(
    metavar="EXECUTION_ID", help="An execution id, or any unique prefix of one."
)


def fail(message: str, code: int) -> NoReturn:
    print(message, file=sys.stderr)
    raise typer.Exit(code)


def query(action: Any, execution_id: str | None = None) -> Any:
    """Run `action(service)`, or `action(service, full_id)` when given an id (or a prefix).

    A bad store setting exits 2, any other whenflow error 1, each as one line.
    """
    from whenflow.domain.errors import StoreSettingsError, WhenflowError
    from whenflow.services.executions import ExecutionService

    async def go() -> Any:
        async with ExecutionService.open() as service:
            if execution_id is None:
                return await action(service)
            return await action(service, await service.resolve_id(execution_id))

    try:
        return asyncio.run(go())
    except StoreSettingsError as exc:
        fail(f"error: {exc}", EXIT_INVALID)
    except WhenflowError as exc:
        fail(f"error: {exc}", EXIT_FAILED)


def resolve_id(id_or_prefix: str) -> str:
    """The full execution id a unique prefix names; exits 1 if none or several do."""
    return str(query(lambda s, full_id: _returned(full_id), id_or_prefix))


async def _returned(value: str) -> str:
    return value
