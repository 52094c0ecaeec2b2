"""Request bodies of the API as pydantic models, camelCase on the wire (DESIGN.md §9).

Bodies are parsed by `bodies.json_body` (bounded) and then validated with
these models; the models also document the routes in `/openapi.json`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Body(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class StartRequest(_Body):
    """`POST /api/v1/pipelines/{name}/start`: the version (default: latest published)
    and the inputs, e.g. `{"version": "1.0.0", "inputVariables": {"start_date": "2025-01-01"}}`."""

    version: str | None = Field(default=None, max_length=200)
    input_variables: dict[str, Any] = Field(default_factory=dict)


class DecisionRequest(_Body):
    """An approve or reject: an optional comment, and who decides (default: the caller)."""

    comment: str = Field(default="", max_length=10_000)
    by: str | None = Field(default=None, max_length=200)


class EventRequest(_Body):
    """`POST .../events`: publishes `external.<name>` with `payload`."""

    name: str = Field(max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)


class ReasonRequest(_Body):
    """A cancel or a node stop, with an optional reason recorded in the events."""

    reason: str | None = Field(default=None, max_length=10_000)


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable, machine-readable word: not_found, conflict, ...")
    message: str = Field(description="What is wrong and what to do, in words")
    details: dict[str, Any] = Field(
        description="The field `path`, and `line`/`column` for YAML, when they apply"
    )


class ErrorResponse(BaseModel):
    """Every error of the API (DESIGN.md §9)."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Not JSON, or not UTF-8"),
        (404, "No such pipeline, version, execution or node"),
        (409, "A conflict: the request cannot apply as things are"),
        (413, "The body is over the size limit"),
        (422, "Invalid YAML, inputs or parameters (with the field path)"),
    )
}


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body the route parses itself."""
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": model.model_json_schema(by_alias=True)}},
        }
    }


YAML_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/yaml": {"schema": {"type": "string"}}},
    }
}


class CycleRequest(_Body):
    """`POST /api/v1/schedules/{id}/cycles`: `{}` starts the next cycle now;
    `{"cycle": 5}` runs cycle 5 again (its number and `logicalDate`)."""

    cycle: int | None = Field(default=None, ge=1)
