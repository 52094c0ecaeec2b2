"""`whenflow connections list|test`: what `connection: NAME` resolves to (docs/connections.md).

Never prints a password: URLs are shown with it replaced by `***`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from whenflow.cli.common import EXIT_FAILED, EXIT_INVALID, JsonOption, fail
from whenflow.cli.output import print_json, print_table


def connections_list(as_json: bool = JsonOption) -> None:
    """The defined connections: name, scheme, host and where each is defined."""
    from whenflow.domain.errors import StoreSettingsError
    from whenflow.services.connections import list_connections

    try:
        views = list_connections()
    except StoreSettingsError as exc:
        fail(f"error: {exc}", EXIT_INVALID)
    if as_json:
        print_json([v.to_json() for v in views])
        return
    if not views:
        print(
            "no connections: set WHENFLOW_CONN_<NAME> to a URL, or write "
            "$WHENFLOW_HOME/connections.yaml (docs/connections.md)"
        )
        return
    print_table(
        ("name", "scheme", "host", "url", "defined in"),
        [(v.name, v.scheme, v.host or "", v.url, v.origin) for v in views],
    )


def connections_test(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The connection's name.")],
    as_json: bool = JsonOption,
) -> None:
    """Reach a connection (a database runs SELECT 1); exit 1 if it fails."""
    from whenflow.domain.errors import StoreSettingsError, WhenflowError
    from whenflow.services.connections import probe

    try:
        result = asyncio.run(probe(name))
    except StoreSettingsError as exc:
        fail(f"error: {exc}", EXIT_INVALID)
    except WhenflowError as exc:
        fail(f"error: {exc}", EXIT_FAILED)
    if as_json:
        print_json(result.to_json())
        return
    print(f"{'ok' if result.tested else 'resolved'}: {name}: {result.message}")
