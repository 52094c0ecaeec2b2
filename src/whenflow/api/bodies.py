"""Request bodies: a size limit for every request, bounded JSON, YAML text.

A body over the limit is refused with 413 before it is read whole (by its
`Content-Length`, or as soon as the bytes read pass it). JSON is parsed by
the standard library, then checked for nesting depth and object size, so a
hostile document is a 4xx, not a deep recursion or a huge allocation.
A NUL character (in the path, the query or a JSON string) or a lone surrogate
(in a JSON string) is a 422: PostgreSQL cannot store the one, no database
the other.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whenflow.api.errors import ApiError, error_response

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024  # the default of WHENFLOW_API_MAX_BODY
MAX_JSON_DEPTH = 64
MAX_OBJECT_KEYS = 10_000


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "body_too_large",
            f"the request body is larger than {limit} bytes; send less "
            "(the limit is WHENFLOW_API_MAX_BODY)",
            {"limit": limit},
        )


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    error = BodyTooLarge(limit)
                    response = error_response(413, error.code, error.message, error.details)
                    response.headers["Connection"] = "close"
                    await response(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


class NoNulCharacters:
    """ASGI middleware: refuse a path or query string holding a NUL character with 422."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = "path" if "\x00" in scope["path"] else None
            if b"%00" in scope.get("query_string", b"") or b"\x00" in scope.get(
                "query_string", b""
            ):
                where = "query"
            if where is not None:
                error = _nul_character([where])
                response = error_response(422, error.code, error.message, error.details)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def json_body(request: Request) -> Any:
    """The request body as bounded JSON; an empty body is `{}`.

    Raises:
        ApiError: 400 for what is not JSON, 422 for a document nested deeper
            than MAX_JSON_DEPTH, an object with more than MAX_OBJECT_KEYS keys,
            or a string holding a NUL character or a lone surrogate.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
    _check_bounds(value)
    return value


def _too_deep() -> ApiError:
    return ApiError(
        422,
        "too_deep",
        f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels",
        {"limit": MAX_JSON_DEPTH},
    )


def _nul_character(path: list[str]) -> ApiError:
    return ApiError(
        422,
        "invalid_request",
        "the request holds a NUL character (\\u0000) or a lone surrogate "
        "(\\ud800-\\udfff), which cannot be stored; remove it",
        {"path": path},
    )


def _storable(text: str) -> bool:
    """Whether a database can store `text`: no NUL, and valid UTF-8 (no lone surrogate)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_bounds(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str) and not _storable(item):
            raise _nul_character(["body"])
        if isinstance(item, dict):
            if not all(_storable(key) for key in item):
                raise _nul_character(["body"])
            if len(item) > MAX_OBJECT_KEYS:
                raise ApiError(
                    422,
                    "too_large",
                    f"a JSON object of the body has {len(item)} keys; at most "
                    f"{MAX_OBJECT_KEYS} are accepted",
                    {"limit": MAX_OBJECT_KEYS},
                )
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= MAX_JSON_DEPTH and len(children):
            raise _too_deep()
        stack.extend((child, depth + 1) for child in children)


async def text_body(request: Request) -> str:
    """The body as UTF-8 text (a YAML definition); 400 for other bytes."""
    raw = await request.body()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_encoding", f"the body is not UTF-8 text: {exc}") from None
