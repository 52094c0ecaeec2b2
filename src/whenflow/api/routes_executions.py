"""Execution routes: start, list, read, and the requests to a running execution."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from whenflow.api.auth import require
from whenflow.api.bodies import json_body
from whenflow.api.errors import ApiError
from whenflow.api.models import (
    ERROR_RESPONSES,
    DecisionRequest,
    EventRequest,
    ReasonRequest,
    StartRequest,
    body_schema,
)
from whenflow.domain.auth import Role
from whenflow.domain.records import MessageKind
from whenflow.domain.states import ExecutionStatus
from whenflow.services import server_reads
from whenflow.services.execution_host import ExecutionHost
from whenflow.services.registry import RegistryService

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
VIEW = [Depends(require(Role.VIEWER))]
OPERATE = [Depends(require(Role.OPERATOR))]
MAX_KEY_LENGTH = 200
MAX_EVENTS = 10_000  # events in one page of GET .../events
MAX_SEQ = 2**53  # larger `since` values are refused (422), never passed to the database


def host_of(request: Request) -> ExecutionHost:
    host: ExecutionHost = request.app.state.host
    return host


def _registry(request: Request) -> RegistryService:
    registry: RegistryService = request.app.state.registry
    return registry


@router.post(
    "/pipelines/{name}/start",
    status_code=201,
    dependencies=OPERATE,
    summary="Start a published pipeline with inputs",
    openapi_extra=body_schema(StartRequest),
)
async def start(
    request: Request,
    response: Response,
    name: str,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """201 `{executionId, status, url}`; with `Idempotency-Key`, the same key and body
    return the first start's execution (200), another body is a 409."""
    data = await json_body(request)
    body = StartRequest.model_validate(data)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY_LENGTH:
        raise ApiError(
            422,
            "invalid_request",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            {"path": ["header", "Idempotency-Key"]},
        )
    program = await request.app.state.programs.get(name, body.version)
    started = await host_of(request).start(
        program, body.input_variables, idempotency_key=idempotency_key, request=data
    )
    response.status_code = 201 if started.created else 200
    return {
        "executionId": started.execution_id,
        "status": started.status,
        "url": f"/api/v1/executions/{started.execution_id}",
    }


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(
            422,
            "invalid_request",
            f"{name}={value!r} is not an ISO 8601 time or unix seconds",
            {"path": ["query", name]},
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _statuses(value: str | None) -> list[ExecutionStatus]:
    if not value:
        return []
    found = []
    for part in value.split(","):
        try:
            found.append(ExecutionStatus(part.strip()))
        except ValueError:
            known = ", ".join(s.value for s in ExecutionStatus)
            raise ApiError(
                422,
                "invalid_request",
                f"status {part!r} is not one of {known}",
                {"path": ["query", "status"]},
            ) from None
    return found


@router.get("/executions", dependencies=VIEW, summary="Executions, newest first, a page at once")
async def list_executions(
    request: Request,
    pipeline: str | None = None,
    status: Annotated[str | None, Query(description="A status, or several with commas")] = None,
    created_after: Annotated[str | None, Query(alias="createdAfter")] = None,
    created_before: Annotated[str | None, Query(alias="createdBefore")] = None,
    schedule: Annotated[
        str | None, Query(max_length=1000, description="Fired by this schedule")
    ] = None,
    cycle: Annotated[int | None, Query(ge=1, le=2**31, description="Of this cycle")] = None,
    limit: Annotated[int, Query(ge=1, le=server_reads.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> dict[str, Any]:
    """`{items, cursor}`: pass `cursor` back for the next page (null on the last one)."""
    page = await server_reads.page_executions(
        host_of(request).service,
        limit=limit,
        cursor=cursor,
        statuses=_statuses(status),
        pipeline=pipeline,
        created_from=_time(created_after, "createdAfter"),
        created_to=_time(created_before, "createdBefore"),
        schedule=schedule,
        cycle=cycle,
    )
    return page.to_json()


@router.get("/executions/{execution_id}", dependencies=VIEW, summary="One execution")
async def get_execution(request: Request, execution_id: str) -> dict[str, Any]:
    """The same object as `whenflow run --json` prints."""
    result = await host_of(request).service.show(execution_id)
    return result.to_json()


@router.get("/executions/{execution_id}/events", dependencies=VIEW, summary="Its event log")
async def get_events(
    request: Request,
    execution_id: str,
    since: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = MAX_EVENTS,
) -> dict[str, Any]:
    """`{items, nextSince}`: events with `seq > since` in seq order, at most `limit`;
    `nextSince` is the `since` of the next page (null when this one is the last)."""
    events = await host_of(request).service.events(execution_id, after_seq=since, limit=limit)
    more = events[-1].seq if len(events) == limit else None
    return {"items": [e.to_json() for e in events], "nextSince": more}


@router.get("/executions/{execution_id}/variables", dependencies=VIEW, summary="Its variables")
async def get_variables(request: Request, execution_id: str) -> dict[str, Any]:
    variables = await host_of(request).service.variables(execution_id)
    return {"items": [v.to_json() for v in variables]}


@router.get(
    "/executions/{execution_id}/nodes/{node}/logs", dependencies=VIEW, summary="A node's logs"
)
async def get_logs(request: Request, execution_id: str, node: str) -> dict[str, Any]:
    service = host_of(request).service
    await service.require_node(execution_id, node)
    lines = await service.logs(execution_id, node_id=node)
    return {"items": [line.to_json() for line in lines]}


async def _send(
    request: Request, execution_id: str, kind: MessageKind, target: str, payload: dict[str, Any]
) -> dict[str, Any]:
    state = await host_of(request).request(execution_id, kind, target, payload)
    if state.refusal is not None:
        raise ApiError(409, "conflict", state.refusal, {"messageId": state.message_id})
    return {"messageId": state.message_id, "applied": state.applied, "refusal": None}


@router.post(
    "/executions/{execution_id}/cancel",
    dependencies=OPERATE,
    summary="Cancel an execution",
    openapi_extra=body_schema(ReasonRequest),
)
async def cancel(request: Request, execution_id: str) -> dict[str, Any]:
    body = ReasonRequest.model_validate(await json_body(request))
    reason = body.reason or "cancelled through the API"
    return await _send(request, execution_id, MessageKind.CANCEL, "", {"reason": reason})


@router.post(
    "/executions/{execution_id}/nodes/{node}/stop",
    dependencies=OPERATE,
    summary="Stop one node of a running execution",
    openapi_extra=body_schema(ReasonRequest),
)
async def stop_node(request: Request, execution_id: str, node: str) -> dict[str, Any]:
    body = ReasonRequest.model_validate(await json_body(request))
    reason = body.reason or "stopped through the API"
    return await _send(request, execution_id, MessageKind.STOP, node, {"reason": reason})


async def _decide(request: Request, execution_id: str, node: str, kind: MessageKind) -> Any:
    body = DecisionRequest.model_validate(await json_body(request))
    by = body.by or getattr(request.state, "principal", None) or "api"
    payload = {"by": str(by), "comment": body.comment}
    return await _send(request, execution_id, kind, node, payload)


@router.post(
    "/executions/{execution_id}/nodes/{node}/approve",
    dependencies=OPERATE,
    summary="Approve a waiting approval node",
    openapi_extra=body_schema(DecisionRequest),
)
async def approve(request: Request, execution_id: str, node: str) -> dict[str, Any]:
    result: dict[str, Any] = await _decide(request, execution_id, node, MessageKind.APPROVE)
    return result


@router.post(
    "/executions/{execution_id}/nodes/{node}/reject",
    dependencies=OPERATE,
    summary="Reject a waiting approval node",
    openapi_extra=body_schema(DecisionRequest),
)
async def reject(request: Request, execution_id: str, node: str) -> dict[str, Any]:
    result: dict[str, Any] = await _decide(request, execution_id, node, MessageKind.REJECT)
    return result


@router.post(
    "/executions/{execution_id}/events",
    dependencies=OPERATE,
    summary="Publish external.<name> into a running execution",
    openapi_extra=body_schema(EventRequest),
)
async def send_event(request: Request, execution_id: str) -> dict[str, Any]:
    body = EventRequest.model_validate(await json_body(request))
    return await _send(request, execution_id, MessageKind.EVENT, body.name, dict(body.payload))


@router.post(
    "/executions/{execution_id}/retry",
    status_code=201,
    dependencies=OPERATE,
    summary="Retry an ended execution as a new one",
)
async def retry(request: Request, execution_id: str) -> dict[str, Any]:
    """201 `{executionId, status, url}` of a new execution (`retryOf` links it) that
    keeps the completed nodes' outputs and runs the failed, stopped, cancelled and
    skipped ones again."""
    started = await host_of(request).retry(execution_id)
    return {
        "executionId": started.execution_id,
        "status": started.status,
        "retryOf": execution_id,
        "url": f"/api/v1/executions/{started.execution_id}",
    }


@router.get("/approvals", dependencies=VIEW, summary="Approvals across executions")
async def approvals(
    request: Request, status: Annotated[str, Query(pattern="^pending$")] = "pending"
) -> dict[str, Any]:
    """Approval nodes waiting for a decision, with the rendered message."""
    found = await server_reads.pending_approvals(host_of(request).service)
    return {"items": [a.to_json() for a in found]}
