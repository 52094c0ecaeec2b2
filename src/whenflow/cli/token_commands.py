"""`whenflow tokens create|list|revoke`: the server's API tokens, in its database.

They act on the database `WHENFLOW_DATABASE_URL` names (default: the embedded
one under `$WHENFLOW_HOME`), the one `whenflow server` reads; `main` registers
these commands.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from whenflow.cli.common import EXIT_FAILED, EXIT_INVALID, JsonOption, fail
from whenflow.cli.output import print_json, print_table

if TYPE_CHECKING:
    from whenflow.services.tokens import TokenService

_T = TypeVar("_T")


def _with_tokens(action: Callable[[TokenService], Awaitable[_T]]) -> _T:
    """Run `action(service)`; a bad store setting exits 2, any other whenflow error 1."""
    from whenflow.domain.errors import StoreSettingsError, WhenflowError
    from whenflow.services.tokens import TokenService

    async def go() -> _T:
        async with TokenService.open() as service:
            return await action(service)

    try:
        return asyncio.run(go())
    except StoreSettingsError as exc:
        fail(f"error: {exc}", EXIT_INVALID)
    except WhenflowError as exc:
        fail(f"error: {exc}", EXIT_FAILED)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def tokens_create(
    role: Annotated[
        str,
        typer.Option(
            "--role",
            metavar="viewer|operator|admin",
            help="What the token may do.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="Whose it is or what it is for.")
    ] = "",
    as_json: bool = JsonOption,
) -> None:
    """Create an API token and print it, once: only its hash is stored."""
    from whenflow.domain.auth import UnknownRole, parse_role

    try:
        wanted = parse_role(role)
    except UnknownRole as exc:
        fail(f"error: --role: {exc}", EXIT_INVALID)
    issued = _with_tokens(lambda s: s.create(wanted, name))
    if as_json:
        print_json({**issued.stored.to_json(), "token": issued.token})
        return
    print(issued.token)
    import sys

    label = f" {issued.stored.name!r}" if issued.stored.name else ""
    print(
        f"token {issued.stored.token_id}{label} ({wanted.value}) created; it is shown only "
        "this once: send it as `Authorization: Bearer <token>` or set WHENFLOW_TOKEN",
        file=sys.stderr,
    )


def tokens_list(as_json: bool = JsonOption) -> None:
    """The API tokens (never their text): id, name, role, created, last used, revoked."""
    found = _with_tokens(lambda s: s.list())
    if as_json:
        print_json([t.to_json() for t in found])
        return
    print_table(
        ("id", "name", "role", "created", "last used", "revoked"),
        [
            (
                t.token_id,
                t.name or "-",
                t.role.value,
                _when(t.created_at),
                _when(t.last_used_at),
                _when(t.revoked_at),
            )
            for t in found
        ],
    )


def tokens_revoke(
    token_id: Annotated[
        str, typer.Argument(metavar="TOKEN_ID", help="A token id, or any unique prefix of one.")
    ],
    as_json: bool = JsonOption,
) -> None:
    """Revoke an API token: requests carrying it are refused from now on."""
    revoked = _with_tokens(lambda s: s.revoke(token_id))
    if as_json:
        print_json(revoked.to_json())
        return
    print(f"token {revoked.token_id} revoked")
