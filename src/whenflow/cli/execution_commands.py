"""`whenflow executions list|show|events|vars|logs|retry`: read executions, from the
embedded store or, with `--server`, through the server's API (`--json` then prints
the API's JSON unchanged); `main` registers these commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from whenflow.cli.common import EXIT_INVALID, ExecutionIdArgument, JsonOption
from whenflow.cli.common import fail as _fail
from whenflow.cli.common import query as _query
from whenflow.cli.output import json_text, print_json, print_table
from whenflow.cli.server_client import needs_server, print_execution, server_url, with_client

if TYPE_CHECKING:
    from whenflow.engine.runtime import ExecutionResult

STATUSES = ("running", "waiting", "completed", "failed", "stopped", "cancelled")


def executions_list(
    limit: int = typer.Option(20, "--limit", metavar="N", help="How many to list."),
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Only these: running, waiting, completed, failed, stopped or cancelled.",
        ),
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option("--pipeline", metavar="NAME", help="Only this pipeline's (with --server)."),
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """The most recent executions."""
    if status is not None and status not in STATUSES:
        _fail(f"error: --status must be one of {', '.join(STATUSES)}", EXIT_INVALID)
    if server_url() is not None:
        page = with_client(lambda c: c.executions(pipeline=pipeline, status=status, limit=limit))
        if as_json:
            print_json(page)
            return
        rows = [
            (r["executionId"], r["pipeline"], r["version"], r["status"], r["createdAt"])
            for r in page["items"]
        ]
    else:
        if pipeline is not None:
            _fail("error: --pipeline needs --server URL", EXIT_INVALID)
        found = _query(lambda s: s.list_executions(limit=limit, status=status))
        if as_json:
            print_json([r.to_json() for r in found])
            return
        rows = [(r.execution_id, r.pipeline, r.version, r.status, r.created) for r in found]
    # Plain columns, never cut: an id must stay whole at any width (docs/cli.md).
    print_table(("execution", "pipeline", "version", "status", "created"), rows)


def executions_show(
    execution_id: Annotated[str, ExecutionIdArgument], as_json: bool = JsonOption
) -> None:
    """One execution: status, nodes, outputs (same object as `run --json`)."""
    if server_url() is not None:
        shown = with_client(lambda c: c.execution(execution_id))
        if as_json:
            print_json(shown)
        else:
            print_execution(shown, nodes=True)
        return
    result, sent = _query(_shown, execution_id)
    if as_json:
        notices = {"notifications": [n.to_json() for n in sent]} if sent else {}
        print_json({**result.to_json(), **notices})
        return
    print_execution(result.to_json(), nodes=True)
    if sent:
        print("notifications:")
    for n in sent:
        outcome = "sent" if n.error is None else f"failed: {n.error}"
        print(f"  {n.outcome:<10} {n.channel:<8} {n.attempts} attempt(s), {outcome}")


async def _shown(service: Any, execution_id: str) -> tuple[ExecutionResult, list[Any]]:
    return await service.show(execution_id), await service.notifications(execution_id)


def executions_events(
    execution_id: Annotated[str, ExecutionIdArgument], as_json: bool = JsonOption
) -> None:
    """The event log of an execution, in seq order."""
    if server_url() is not None:
        items = with_client(lambda c: c.all_events(execution_id))
        if as_json:
            print_json({"items": items, "nextSince": None})
            return
    else:
        events = _query(lambda s, full_id: s.events(full_id), execution_id)
        if as_json:
            print_json([e.to_json() for e in events])
            return
        items = [e.to_json() for e in events]
    for e in items:
        payload = f" {json_text(e['payload'])}" if e.get("payload") else ""
        print(f"{e['seq']:>6} {e['timestamp']} {e['eventType']}{payload}")


def executions_vars(
    execution_id: Annotated[str, ExecutionIdArgument], as_json: bool = JsonOption
) -> None:
    """The variables an execution wrote."""
    if server_url() is not None:
        found = with_client(lambda c: c.variables(execution_id))
        if as_json:
            print_json(found)
            return
        for v in found["items"]:
            print(f"{v['scope']}.{v['name']} ({v['type']}) = {json_text(v['value'])}")
        return
    variables = _query(lambda s, full_id: s.variables(full_id), execution_id)
    if as_json:
        print_json([v.to_json() for v in variables])
        return
    for var in variables:
        print(f"{var.scope}.{var.name} ({var.type}) = {var.display}")


def executions_logs(
    execution_id: Annotated[str, ExecutionIdArgument],
    node: Annotated[
        str | None, typer.Option("--node", metavar="NODE", help="Only this node's lines.")
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """Task logs (stdout, stderr, ctx.log) of an execution."""
    if server_url() is not None:
        lines = with_client(lambda c: _server_logs(c, execution_id, node))
        if as_json:
            print_json({"items": lines})
            return
    else:
        logs = _query(lambda s, full_id: s.logs(full_id, node_id=node), execution_id)
        if as_json:
            print_json([line.to_json() for line in logs])
            return
        lines = [line.to_json() for line in logs]
    for line in lines:
        print(f"{line['nodeId']}#{line['attempt']} [{line['stream']}] {line['message']}")


def _server_logs(client: Any, execution_id: str, node: str | None) -> list[Any]:
    """One node's lines, or every node's (the API serves them a node at a time)."""
    nodes = [node] if node else list(client.execution(execution_id)["nodes"])
    return [line for n in nodes for line in client.logs(execution_id, n)["items"]]


def executions_retry(
    execution_id: Annotated[str, ExecutionIdArgument], as_json: bool = JsonOption
) -> None:
    """Retry an ended execution as a new one: completed nodes keep their outputs,
    the failed, stopped and cancelled ones run again (needs --server)."""
    if server_url() is None:
        needs_server("`whenflow executions retry`")
    started = with_client(lambda c: c.retry(execution_id))
    if as_json:
        print_json(started)
    else:
        print(f"execution {started['executionId']} retries {execution_id}: {started['status']}")
