"""Requests to a running execution: approve, reject, events send, executions cancel.

Each goes through the execution's inbox in the shared store (docs/cli.md,
"Requests to a running execution"); `main` registers these commands.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from whenflow.cli.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    ExecutionIdArgument,
    JsonOption,
    fail,
    query,
    resolve_id,
)
from whenflow.cli.output import print_json
from whenflow.cli.server_client import print_message_state, server_url, with_client

if TYPE_CHECKING:
    from whenflow.client import Client

WaitOption = typer.Option(
    10.0,
    "--wait",
    metavar="SECONDS",
    help="Seconds to wait for the running execution to apply it (0: don't).",
)


def _send(
    execution_id: str,
    kind_name: str,
    target: str,
    payload: dict[str, Any],
    wait: float,
    as_json: bool,
    done: str,
    *,
    force: bool = False,
) -> None:
    """Post to an execution's inbox; exit 1 if it was refused, 0 if applied or queued.

    With a server (`--server`), the request goes through its API instead.
    """
    from whenflow.domain.records import MessageKind

    if server_url() is not None:
        _send_to_server(execution_id, kind_name, target, payload, as_json, done)
        return
    kind = MessageKind(kind_name)
    execution_id = resolve_id(execution_id)
    state = query(lambda s: s.send(execution_id, kind, target, payload, wait_s=wait, force=force))
    if as_json:
        print_json(
            {"messageId": state.message_id, "applied": state.applied, "refusal": state.refusal}
        )
    elif state.refusal:
        print(f"refused: {state.refusal}", file=sys.stderr)
    elif state.applied:
        print(done)
    else:
        print(
            f"queued as message {state.message_id}: it applies when the process running "
            f"{execution_id} next reads its inbox; if that process has stopped, run "
            f"`whenflow resume {execution_id}`"
        )
    raise typer.Exit(EXIT_FAILED if state.refusal else EXIT_OK)


def _send_to_server(
    execution_id: str,
    kind_name: str,
    target: str,
    payload: dict[str, Any],
    as_json: bool,
    done: str,
) -> None:
    """The same request through the server's API; a refusal is its 409 (exit 1)."""

    def call(client: Client) -> Any:
        if kind_name in ("approve", "reject"):
            decide = client.approve if kind_name == "approve" else client.reject
            return decide(execution_id, target, payload["comment"], by=payload["by"])
        if kind_name == "event":
            return client.send_event(execution_id, target, payload)
        if kind_name == "stop":
            return client.stop_node(execution_id, target, payload.get("reason"))
        return client.cancel(execution_id, payload.get("reason"))

    state = with_client(call)
    if as_json:
        print_json(state)
    else:
        print_message_state(state, done)


def _current_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a bare container)
        return "unknown"


ByOption = typer.Option(
    None, "--by", metavar="NAME", help="Who decides (default: the current user)."
)
CommentOption = typer.Option(
    "", "--comment", "-m", metavar="TEXT", help="Why; stored with the decision."
)
NodeArgument = typer.Argument(metavar="NODE", help="The approval node to decide.")


def approve(
    execution_id: Annotated[str, ExecutionIdArgument],
    node: Annotated[str, NodeArgument],
    by: str | None = ByOption,
    comment: str = CommentOption,
    wait: float = WaitOption,
    as_json: bool = JsonOption,
) -> None:
    """Approve a waiting approval node of a running execution."""
    payload = {"by": by or _current_user(), "comment": comment}
    _send(execution_id, "approve", node, payload, wait, as_json, f"{node}: approved")


def reject(
    execution_id: Annotated[str, ExecutionIdArgument],
    node: Annotated[str, NodeArgument],
    by: str | None = ByOption,
    comment: str = CommentOption,
    wait: float = WaitOption,
    as_json: bool = JsonOption,
) -> None:
    """Reject a waiting approval node of a running execution."""
    payload = {"by": by or _current_user(), "comment": comment}
    _send(execution_id, "reject", node, payload, wait, as_json, f"{node}: rejected")


def events_send(
    execution_id: Annotated[str, ExecutionIdArgument],
    name: Annotated[str, typer.Argument(metavar="NAME", help="Published as external.<name>.")],
    pairs: Annotated[
        list[str] | None,
        typer.Option("-p", "--payload", metavar="KEY=VALUE", help="A payload field as key=value."),
    ] = None,
    payload_json: Annotated[
        str | None,
        typer.Option("--payload-json", metavar="JSON", help="The payload as a JSON object."),
    ] = None,
    wait: float = WaitOption,
    as_json: bool = JsonOption,
    force: Annotated[
        bool, typer.Option("--force", help="Publish even if no trigger waits for the event.")
    ] = False,
) -> None:
    """Publish `external.<name>` into a running execution.

    Refused when no trigger or template of the execution's pipeline reads
    `external.<name>` (a misspelt name would change nothing); `--force` sends it anyway.
    """
    payload: dict[str, Any] = {}
    if payload_json is not None:
        try:
            loaded = json.loads(payload_json)
        except ValueError as exc:
            fail(f"error: --payload-json is not JSON: {exc}", EXIT_INVALID)
        if not isinstance(loaded, dict):
            fail("error: --payload-json must be a JSON object", EXIT_INVALID)
        payload.update(loaded)
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"error: write payload fields as -p key=value, not {pair!r}", EXIT_INVALID)
        payload[key.strip()] = value
    done = f"external.{name}: published"
    _send(execution_id, "event", name, payload, wait, as_json, done, force=force)


def executions_cancel(
    execution_id: Annotated[str, ExecutionIdArgument],
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why; stored with the cancel.")
    ] = "cancelled from the command line",
    wait: float = WaitOption,
    as_json: bool = JsonOption,
) -> None:
    """Cancel a running execution: running tasks are cancelled, nothing new starts.

    Finally nodes still run, for at most the pipeline's finallyGrace; cancel again
    to end them at once.
    """
    _send(execution_id, "cancel", "", {"reason": reason}, wait, as_json, "cancelled")


def nodes_stop(
    execution_id: Annotated[str, ExecutionIdArgument],
    node: Annotated[str, typer.Argument(metavar="NODE", help="The running node to stop.")],
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why; stored with the stop.")
    ] = "stopped from the command line",
    wait: float = WaitOption,
    as_json: bool = JsonOption,
) -> None:
    """Stop one node of a running execution; the rest goes on (`event:NODE.stopped` fires)."""
    _send(execution_id, "stop", node, {"reason": reason}, wait, as_json, f"{node}: stopped")
