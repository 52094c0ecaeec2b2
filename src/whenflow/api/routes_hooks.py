"""`POST /api/v1/hooks/{key}`: a webhook delivery starts the pipelines whose trigger has
that key (`spec.triggers`, DESIGN.md §12).

The key is the credential: the route takes no bearer token (a sender such as
a Git host cannot send one), and an unknown key is a 404 that says nothing
about which keys exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from whenflow.api.bodies import json_body
from whenflow.api.errors import ApiError
from whenflow.api.models import ERROR_RESPONSES
from whenflow.services.start_triggers import WebhookStarts

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
MAX_KEY_LENGTH = 200


@router.post(
    "/hooks/{key}",
    status_code=201,
    summary="A webhook delivery: start the pipelines whose trigger has this key",
)
async def deliver(
    request: Request,
    response: Response,
    key: str,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """201 `{items: [{pipeline, version, executionId, status, created, url}]}`; a replay
    with the same `Idempotency-Key` and body starts nothing new (200, `created: false`)."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY_LENGTH:
        raise ApiError(
            422,
            "invalid_request",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            {"path": ["header", "Idempotency-Key"]},
        )
    body = await json_body(request)
    hooks: WebhookStarts = request.app.state.hooks
    starts = await hooks.deliver(key, body, dict(request.headers), idempotency_key)
    response.status_code = 201 if any(s.created for s in starts) else 200
    return {"items": [s.to_json() for s in starts]}
