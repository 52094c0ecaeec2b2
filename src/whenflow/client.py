"""`whenflow.Client`: the REST API of `whenflow server` from Python (DESIGN.md §9, §11).

    from whenflow import Client

    with Client("http://127.0.0.1:8080", token="wf_...") as client:
        client.push(open("etl.yaml").read(), publish=True)
        started = client.start("etl", {"start_date": "2025-01-01"})
        result = client.wait(started["executionId"])

`AsyncClient` has the same methods as coroutines, for code that runs on a
loop (what Prefect's `get_client()` gives seed 003's users). Both return the
API's JSON documents (camelCase, as `docs/api.md` shows them) and raise
`ApiError` for an error response; `url` and `token` default to the
`WHENFLOW_SERVER` and `WHENFLOW_TOKEN` variables.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx

from whenflow.domain.errors import WhenflowError

__all__ = ["ApiError", "AsyncClient", "Client"]

DEFAULT_SERVER = "http://127.0.0.1:8080"
TERMINAL = frozenset({"completed", "failed", "cancelled", "stopped"})

R = TypeVar("R")


class ApiError(WhenflowError):
    """The server answered a request with an error (`{"error": {code, message, details}}`).

    `status` is the HTTP status; `code`, `message` and `details` are the
    server's (details holds the field path, `line`/`column` for YAML).
    """

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        super().__init__(f"{status} {code}: {message}")


@dataclass(frozen=True, slots=True)
class Call:
    """One API request: what both clients send."""

    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None
    content: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _seg(value: str) -> str:
    """One path segment, quoted so an id cannot step into another route."""
    return quote(value, safe="")


def _answer(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        error = response.json()["error"]
        raise ApiError(
            response.status_code, error.get("code", "error"), error["message"], error.get("details")
        )
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http_error", response.text[:500]) from None


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class _Api(Generic[R]):
    """The calls of the API; `_send` decides whether they block or are awaited."""

    def _send(self, call: Call) -> R:
        raise NotImplementedError

    # ---------------------------------------------------------------- registry

    def push(self, yaml_text: str, *, publish: bool = False, kind: str = "pipelines") -> R:
        """Push a definition's YAML as a draft (or publish it): `{name, version, status}`.

        `kind` is `pipelines` or `tasks`.
        """
        return self._send(
            Call(
                "POST",
                f"/api/v1/{kind}",
                params={"publish": "true"} if publish else {},
                content=yaml_text,
                headers={"Content-Type": "application/yaml"},
            )
        )

    def publish(self, name: str, version: str, *, kind: str = "pipelines") -> R:
        """Publish a pushed draft; the version becomes immutable."""
        return self._send(
            Call("POST", f"/api/v1/{kind}/{_seg(name)}/versions/{_seg(version)}/publish")
        )

    def pipelines(self, *, kind: str = "pipelines") -> R:
        """The registry's definitions of `kind`."""
        return self._send(Call("GET", f"/api/v1/{kind}"))

    def pipeline(self, name: str, version: str | None = None, *, kind: str = "pipelines") -> R:
        """One definition (its versions), or one version with its YAML."""
        path = f"/api/v1/{kind}/{_seg(name)}"
        if version is not None:
            path += f"/versions/{_seg(version)}"
        return self._send(Call("GET", path))

    # -------------------------------------------------------------- executions

    def start(
        self,
        name: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Start a published pipeline: `{executionId, status, url}`.

        The same `idempotency_key` returns the same execution; with other
        inputs it is a conflict (ApiError 409).
        """
        body: dict[str, Any] = {"inputVariables": dict(inputs or {})}
        if version is not None:
            body["version"] = version
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._send(
            Call("POST", f"/api/v1/pipelines/{_seg(name)}/start", json=body, headers=headers)
        )

    def executions(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> R:
        """One page of executions, newest first: `{items, cursor}`.

        `status` is one status or several joined by commas; `created_after` and
        `created_before` are ISO 8601 times or unix seconds; pass the answer's
        `cursor` back for the next page (it is null on the last one).
        """
        params = {
            "pipeline": pipeline,
            "status": status,
            "createdAfter": created_after,
            "createdBefore": created_before,
            "cursor": cursor,
            "limit": limit,
        }
        return self._send(
            Call(
                "GET",
                "/api/v1/executions",
                params={k: v for k, v in params.items() if v is not None},
            )
        )

    def execution(self, execution_id: str) -> R:
        """The execution object (the shape `whenflow run --json` prints)."""
        return self._send(Call("GET", f"/api/v1/executions/{_seg(execution_id)}"))

    def events(self, execution_id: str, *, since: int = 0, limit: int | None = None) -> R:
        """One page of the execution's events with `seq > since`: `{items, nextSince}`.

        `nextSince` is the `since` of the next page, null on the last one.
        """
        params: dict[str, Any] = {"since": since}
        if limit is not None:
            params["limit"] = limit
        return self._send(
            Call("GET", f"/api/v1/executions/{_seg(execution_id)}/events", params=params)
        )

    def variables(self, execution_id: str) -> R:
        """The variables the execution wrote: `{items}`."""
        return self._send(Call("GET", f"/api/v1/executions/{_seg(execution_id)}/variables"))

    def logs(self, execution_id: str, node: str) -> R:
        """A node's log lines: `{items}`."""
        return self._send(
            Call("GET", f"/api/v1/executions/{_seg(execution_id)}/nodes/{_seg(node)}/logs")
        )

    def cancel(self, execution_id: str, reason: str | None = None) -> R:
        """Cancel a running execution: `{messageId, applied, refusal}`."""
        return self._send(
            Call(
                "POST",
                f"/api/v1/executions/{_seg(execution_id)}/cancel",
                json=_reason(reason),
            )
        )

    def stop_node(self, execution_id: str, node: str, reason: str | None = None) -> R:
        """Stop one node of a running execution (seed 001's "stop a component")."""
        return self._send(
            Call(
                "POST",
                f"/api/v1/executions/{_seg(execution_id)}/nodes/{_seg(node)}/stop",
                json=_reason(reason),
            )
        )

    def retry(self, execution_id: str) -> R:
        """A new execution running the failed, stopped and cancelled nodes again:
        `{executionId, status, retryOf, url}`."""
        return self._send(Call("POST", f"/api/v1/executions/{_seg(execution_id)}/retry"))

    def approve(
        self, execution_id: str, node: str, comment: str = "", *, by: str | None = None
    ) -> R:
        """Approve a waiting approval node: `{messageId, applied, refusal}`.

        A second decision, or a node that is not waiting, is an ApiError 409.
        `by` defaults to the token's name on the server.
        """
        return self._decide(execution_id, node, "approve", comment, by)

    def reject(
        self, execution_id: str, node: str, comment: str = "", *, by: str | None = None
    ) -> R:
        """Reject a waiting approval node; as `approve`."""
        return self._decide(execution_id, node, "reject", comment, by)

    def _decide(
        self, execution_id: str, node: str, decision: str, comment: str, by: str | None
    ) -> R:
        path = f"/api/v1/executions/{_seg(execution_id)}/nodes/{_seg(node)}/{decision}"
        body: dict[str, Any] = {"comment": comment}
        if by is not None:
            body["by"] = by
        return self._send(Call("POST", path, json=body))

    def approvals(self, *, status: str = "pending") -> R:
        """Approval nodes across executions, with their rendered messages."""
        return self._send(Call("GET", "/api/v1/approvals", params={"status": status}))

    def send_event(
        self, execution_id: str, name: str, payload: Mapping[str, Any] | None = None
    ) -> R:
        """Publish `external.<name>` into a running execution."""
        return self._send(
            Call(
                "POST",
                f"/api/v1/executions/{_seg(execution_id)}/events",
                json={"name": name, "payload": dict(payload or {})},
            )
        )


class Client(_Api[Any]):
    """A blocking client; use it as a context manager, or `close()` it.

    `url` defaults to `$WHENFLOW_SERVER` (else http://127.0.0.1:8080), `token` to
    `$WHENFLOW_TOKEN`; `timeout` is seconds per request. Every call raises
    ApiError for an error answer and `httpx.TransportError` for a server that
    cannot be reached.
    """

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0
    ) -> None:
        self.url = _base_url(url)
        self._http = httpx.Client(
            base_url=self.url, headers=_headers(_token(token)), timeout=timeout
        )

    def _send(self, call: Call) -> Any:
        response = self._http.request(
            call.method,
            call.path,
            params=dict(call.params),
            json=call.json,
            content=call.content,
            headers=dict(call.headers),
        )
        return _answer(response)

    def all_events(self, execution_id: str, *, since: int = 0) -> list[dict[str, Any]]:
        """Every event of the execution with `seq > since`, page after page."""
        found: list[dict[str, Any]] = []
        next_since: int | None = since
        while next_since is not None:
            page = self.events(execution_id, since=next_since)
            found.extend(page["items"])
            next_since = page["nextSince"]
        return found

    def stream(
        self, execution_id: str, *, since: int = 0, timeout: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """The execution's events with `seq > since`, then the new ones as they come
        (Server-Sent Events); the iterator ends when the execution's last event has
        come (or the server closed the stream: it is shutting down).

        `timeout` bounds the silence between two frames (the server sends a
        keepalive every 15 s); None waits as long as the connection lives.
        """
        path = f"/api/v1/executions/{_seg(execution_id)}/events/stream"
        read = httpx.Timeout(self._http.timeout.connect, read=timeout)
        with self._http.stream(
            "GET",
            path,
            params={"since": since},
            headers={"Accept": "text/event-stream"},
            timeout=read,
        ) as response:
            if not response.is_success:
                response.read()
                _answer(response)
            frames = _SseFrames()
            for line in response.iter_lines():
                event = frames.feed(line)
                if event is not None:
                    yield event

    def wait(self, execution_id: str, *, timeout: float | None = None) -> Any:
        """Block until the execution ends; its execution object (any final status).

        Follows the event stream (reconnecting after the last seen `seq` if the
        server closes it early); raises TimeoutError after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            execution = self.execution(execution_id)
            if execution["status"] in TERMINAL:
                return execution
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"execution {execution_id} did not end within {timeout} s")
            try:
                for event in self.stream(execution_id, since=seen, timeout=left):
                    seen = max(seen, int(event.get("seq", seen)))
                    if deadline is not None and time.monotonic() > deadline:
                        break
            except httpx.ReadTimeout:
                pass

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Api[Awaitable[Any]]):
    """The same calls as `Client`, as coroutines; `async with AsyncClient(...) as c`."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0
    ) -> None:
        self.url = _base_url(url)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(_token(token)), timeout=timeout
        )

    async def _request(self, call: Call) -> Any:
        response = await self._http.request(
            call.method,
            call.path,
            params=dict(call.params),
            json=call.json,
            content=call.content,
            headers=dict(call.headers),
        )
        return _answer(response)

    def _send(self, call: Call) -> Awaitable[Any]:
        return self._request(call)

    async def all_events(self, execution_id: str, *, since: int = 0) -> list[dict[str, Any]]:
        """Every event of the execution with `seq > since`, page after page."""
        found: list[dict[str, Any]] = []
        next_since: int | None = since
        while next_since is not None:
            page = await self.events(execution_id, since=next_since)
            found.extend(page["items"])
            next_since = page["nextSince"]
        return found

    async def stream(self, execution_id: str, *, since: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The execution's events from `since` on, as they come; ends with the execution
        (bound it with `asyncio.timeout`)."""
        path = f"/api/v1/executions/{_seg(execution_id)}/events/stream"
        async with self._http.stream(
            "GET",
            path,
            params={"since": since},
            headers={"Accept": "text/event-stream"},
            timeout=httpx.Timeout(self._http.timeout.connect, read=None),
        ) as response:
            if not response.is_success:
                await response.aread()
                _answer(response)
            frames = _SseFrames()
            async for line in response.aiter_lines():
                event = frames.feed(line)
                if event is not None:
                    yield event

    async def wait(self, execution_id: str) -> Any:
        """Until the execution ends; its execution object (bound it with `asyncio.timeout`)."""
        seen = 0
        while True:
            execution = await self.execution(execution_id)
            if execution["status"] in TERMINAL:
                return execution
            async for event in self.stream(execution_id, since=seen):
                seen = max(seen, int(event.get("seq", seen)))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _base_url(url: str | None) -> str:
    return (url or os.environ.get("WHENFLOW_SERVER") or DEFAULT_SERVER).rstrip("/")


def _token(token: str | None) -> str | None:
    return token if token is not None else os.environ.get("WHENFLOW_TOKEN") or None


def _reason(reason: str | None) -> dict[str, Any]:
    return {} if reason is None else {"reason": reason}


class _SseFrames:
    """Server-Sent Events, fed line by line: each frame's `data:` as a JSON object.

    Comment lines (`: keepalive`) and the `event:`/`id:` fields are skipped: the
    data holds the event's `eventType` and `seq` itself.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        """The frame this blank line ends, else None."""
        if line == "":
            if not self._data:
                return None
            text, self._data = "\n".join(self._data), []
            found: dict[str, Any] = json.loads(text)
            return found
        if line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None
