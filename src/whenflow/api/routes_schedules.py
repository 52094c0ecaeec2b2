"""Schedule and cycle routes (DESIGN.md §12): list, pause, resume, trigger, stop a cycle.

A schedule's id is `<pipeline>:<schedule id>`; its cycles are numbered from 1.
Reads need the viewer role, changes the operator role.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from whenflow.api.auth import require
from whenflow.api.bodies import json_body
from whenflow.api.errors import ApiError
from whenflow.api.models import ERROR_RESPONSES, CycleRequest, ReasonRequest, body_schema
from whenflow.domain.auth import Role
from whenflow.services.server_schedules import ServerSchedules

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
VIEW = [Depends(require(Role.VIEWER))]
OPERATE = [Depends(require(Role.OPERATOR))]
MAX_CYCLES = 500


def _schedules(request: Request) -> ServerSchedules:
    schedules: ServerSchedules = request.app.state.schedules
    return schedules


@router.get("/schedules", dependencies=VIEW, summary="Every schedule with its next fire times")
async def list_schedules(request: Request, pipeline: str | None = None) -> dict[str, Any]:
    """`{items}`: each `{id, pipeline, version, spec, paused, cycles, next}`; `next` holds
    the next five fire times (ISO 8601 in the schedule's time zone; empty while paused)."""
    found = await _schedules(request).service.list_schedules(pipeline)
    return {"items": [s.to_json() for s in found]}


@router.get("/schedules/{schedule_id}", dependencies=VIEW, summary="One schedule")
async def get_schedule(
    request: Request,
    schedule_id: str,
    count: Annotated[int, Query(ge=0, le=100, description="How many next fire times")] = 5,
) -> dict[str, Any]:
    return (await _schedules(request).service.get(schedule_id, count=count)).to_json()


@router.post("/schedules/{schedule_id}/pause", dependencies=OPERATE, summary="Pause a schedule")
async def pause(request: Request, schedule_id: str) -> dict[str, Any]:
    """Nothing fires until it is resumed; running cycles go on."""
    return (await _schedules(request).service.pause(schedule_id)).to_json()


@router.post("/schedules/{schedule_id}/resume", dependencies=OPERATE, summary="Resume it")
async def resume(request: Request, schedule_id: str) -> dict[str, Any]:
    """The slots that passed while it was paused do not fire; the next one does."""
    return (await _schedules(request).service.resume(schedule_id)).to_json()


@router.get("/schedules/{schedule_id}/cycles", dependencies=VIEW, summary="Its cycles")
async def cycles(
    request: Request,
    schedule_id: str,
    limit: Annotated[int, Query(ge=1, le=MAX_CYCLES)] = 50,
) -> dict[str, Any]:
    """`{items}`, latest first: `{cycle, logicalDate, executionId, status, firedAt}`."""
    found = await _schedules(request).service.cycles(schedule_id, limit=limit)
    return {"items": [c.to_json() for c in found]}


@router.get("/schedules/{schedule_id}/cycles/{cycle}", dependencies=VIEW, summary="One cycle")
async def one_cycle(request: Request, schedule_id: str, cycle: int) -> dict[str, Any]:
    return (await _schedules(request).service.cycle(schedule_id, cycle)).to_json()


@router.post(
    "/schedules/{schedule_id}/cycles",
    status_code=201,
    dependencies=OPERATE,
    summary="Start a cycle now: the next one, or a past one again",
    openapi_extra=body_schema(CycleRequest),
)
async def start_cycle(request: Request, response: Response, schedule_id: str) -> dict[str, Any]:
    """201 `{cycle, executionId, url}`. Paused or not, overlap aside; with `{"cycle": n}`
    cycle n runs again as a new execution with its number and `logicalDate`."""
    body = CycleRequest.model_validate(await json_body(request))
    fired = await _schedules(request).trigger(schedule_id, body.cycle)
    if fired is None:
        raise ApiError(409, "conflict", "a cycle was started at this very instant; retry")
    return {
        "cycle": fired.cycle,
        "executionId": fired.execution_id,
        "url": f"/api/v1/executions/{fired.execution_id}",
    }


@router.post(
    "/schedules/{schedule_id}/cycles/{cycle}/stop",
    dependencies=OPERATE,
    summary="Stop a cycle: cancel its execution",
    openapi_extra=body_schema(ReasonRequest),
)
async def stop_cycle(request: Request, schedule_id: str, cycle: int) -> dict[str, Any]:
    """`{cycle, executionId, messageId, applied}`; 409 when its execution has ended."""
    body = ReasonRequest.model_validate(await json_body(request))
    reason = body.reason or f"cycle {cycle} stopped through the API"
    found, state = await _schedules(request).stop_cycle(schedule_id, cycle, reason)
    if state.refusal is not None:
        raise ApiError(409, "conflict", state.refusal, {"messageId": state.message_id})
    return {
        "cycle": found.cycle,
        "executionId": found.execution_id,
        "messageId": state.message_id,
        "applied": state.applied,
    }
