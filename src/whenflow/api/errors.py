"""API errors: one JSON shape, `{"error": {"code", "message", "details"}}` (DESIGN.md §9).

Every whenflow error maps to a status here, so bad input is always a 4xx with
a message that says what to fix, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from whenflow.domain.errors import (
    AmbiguousExecutionId,
    CycleNotFound,
    DefinitionError,
    ExecutionNotFound,
    InputError,
    NodeNotFound,
    RequestRefused,
    ScheduleNotFound,
    StoreError,
    WhenflowError,
)
from whenflow.domain.registry import NotADraft, NotInRegistry, VersionConflict
from whenflow.services.execution_host import ServerClosing
from whenflow.services.idempotent_starts import IdempotencyConflict
from whenflow.services.start_triggers import UnknownHook

_log = logging.getLogger("whenflow.server")


class ApiError(Exception):
    """An error response the API decided on itself (a bad body, a missing header)."""

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})


def error_response(
    status: int, code: str, message: str, details: Mapping[str, Any] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": dict(details or {})}}
    return JSONResponse(body, status_code=status)


def _definition_details(exc: DefinitionError) -> dict[str, Any]:
    issues = [
        {
            "message": issue.message,
            "field": issue.field,
            "line": issue.location.line if issue.location else None,
            "column": issue.location.column if issue.location else None,
        }
        for issue in exc.issues
    ]
    first = issues[0]
    return {"line": first["line"], "column": first["column"], "issues": issues}


def _from_whenflow(exc: WhenflowError) -> JSONResponse:
    message = str(exc)
    not_found = (
        ExecutionNotFound,
        NotInRegistry,
        NodeNotFound,
        AmbiguousExecutionId,
        ScheduleNotFound,
        CycleNotFound,
        UnknownHook,
    )
    if isinstance(exc, not_found):
        return error_response(404, "not_found", message)
    if isinstance(exc, DefinitionError):
        return error_response(422, "invalid_definition", message, _definition_details(exc))
    if isinstance(exc, InputError):
        return error_response(422, "invalid_input", message, {"path": ["inputVariables", exc.name]})
    if isinstance(exc, ServerClosing):
        return error_response(503, "shutting_down", message)
    if isinstance(exc, IdempotencyConflict | VersionConflict | NotADraft | RequestRefused):
        return error_response(409, "conflict", message)
    if isinstance(exc, StoreError):
        _log.error("store unavailable: %s", message)
        return error_response(503, "store_unavailable", store_message(message))
    return error_response(400, "bad_request", message)


def store_message(message: str) -> str:
    """A store error's text for an API caller: its first line, without the statement.

    SQLAlchemy appends the SQL, its bound parameters (task data, perhaps a
    secret) and a link; the server's log keeps them, the caller gets the cause.
    """
    first = message.strip().splitlines()[0] if message.strip() else "the store is unavailable"
    for marker in (" [SQL:", "[SQL:", " [parameters:", " (Background on this error"):
        first = first.split(marker, 1)[0]
    return first.rstrip()


def _path(loc: tuple[int | str, ...]) -> list[int | str]:
    return [part for part in loc if part != "body"]


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(WhenflowError)
    async def whenflow_error(request: Request, exc: WhenflowError) -> JSONResponse:
        return _from_whenflow(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc.errors())

    @app.exception_handler(ValidationError)
    async def invalid_body(request: Request, exc: ValidationError) -> JSONResponse:
        return _validation_response(exc.errors())

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        _log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(
            500,
            "internal",
            "internal error in whenflow (a bug: the server log has the traceback); "
            "please report it",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        code = codes.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response


def _validation_response(errors: Any) -> JSONResponse:
    problems = [
        {"path": _path(tuple(e.get("loc", ()))), "message": str(e.get("msg", ""))}
        for e in list(errors)[:20]
    ]
    first = problems[0] if problems else {"path": [], "message": "invalid request"}
    where = ".".join(str(p) for p in first["path"]) or "the request"
    return error_response(
        422,
        "invalid_request",
        f"{where}: {first['message']}",
        {"path": first["path"], "problems": problems},
    )
