"""The CLI against a server: `--server URL` / `$WHENFLOW_SERVER` and `--token` /
`$WHENFLOW_TOKEN` make the commands go through `whenflow.Client` (docs/cli.md,
"Against a server") instead of the embedded store.

An error answer prints one line, `error: 404 not_found: ...`, and exits 1; a
server that cannot be reached exits 1 too; a command that has no embedded
form and got no server exits 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from whenflow.cli.common import EXIT_FAILED, EXIT_INVALID, fail
from whenflow.cli.output import json_text

if TYPE_CHECKING:
    from whenflow.client import Client

_T = TypeVar("_T")


@dataclass(slots=True)
class _Target:
    url: str | None = None
    token: str | None = None


_TARGET = _Target()


def use_server(url: str | None, token: str | None) -> None:
    """Remember the global options of this invocation (the main callback calls it)."""
    _TARGET.url = url.strip() if url and url.strip() else None
    _TARGET.token = token or None


def server_url() -> str | None:
    """The server the commands talk to, or None: the embedded store."""
    return _TARGET.url


def with_client(action: Callable[[Client], _T]) -> _T:
    """`action(client)` against the server; an error answer or an unreachable server
    prints one line and exits 1."""
    import httpx

    from whenflow.client import ApiError, Client

    url = _TARGET.url
    if url is None:
        needs_server("this command")
    if not url.startswith(("http://", "https://")):
        fail(f"error: --server {url!r} is not an http:// or https:// URL", EXIT_INVALID)
    try:
        with Client(url, token=_TARGET.token or "") as client:
            return action(client)
    except ApiError as exc:
        fail(f"error: {exc}", EXIT_FAILED)
    except httpx.TransportError as exc:
        fail(f"error: cannot reach the server at {url}: {exc or type(exc).__name__}", EXIT_FAILED)


def needs_server(what: str) -> NoReturn:
    """Exit 2: `what` has no embedded form."""
    fail(f"error: {what} needs a server: pass --server URL or set WHENFLOW_SERVER", EXIT_INVALID)


def print_execution(execution: Mapping[str, Any], *, nodes: bool = False) -> None:
    """An execution object (`GET /api/v1/executions/{id}`) as text: status, error,
    failed nodes, outputs, and with `nodes` one line per node."""
    from rich.console import Console

    console = Console()
    status = str(execution.get("status"))
    style = "green" if status == "completed" else "bold red"
    console.print(f"execution {execution.get('executionId')}: [{style}]{status}[/]")
    if execution.get("error"):
        console.print(f"  error: {execution['error']}", markup=False)
    node_map: Mapping[str, Any] = execution.get("nodes") or {}
    for node_id, node in node_map.items():
        if node.get("status") == "failed":
            console.print(f"  {node_id} failed: {node.get('error')}", markup=False)
    if execution.get("outputs"):
        console.print("outputs:", json_text(execution["outputs"], indent=2), markup=False)
    if nodes:
        for node_id, node in node_map.items():
            print(f"  {node_id:<24} {node.get('status', ''):<10} attempts={node.get('attempts')}")


def print_message_state(state: Mapping[str, Any], done: str) -> None:
    """A request's answer (`{messageId, applied, refusal}`) in words."""
    if state.get("applied"):
        print(done)
    else:
        print(
            f"queued as message {state.get('messageId')}: the process running the "
            "execution applies it at its next inbox read",
            file=sys.stdout,
        )
