"""The `http` executor: one HTTP request through httpx, behind the egress policy.

    task:
      type: http
      method: POST                      # default GET
      url: https://api.example.com/items
      headers: {Authorization: "Bearer {{ secret('API_TOKEN') }}"}
      query: {page: 2}
      json: {name: "{{ pipeline.input.name }}"}   # or `data`: a form mapping or raw text
      timeout: 30s                      # per request; default 30s
      expectStatus: [200, 201]          # default: any 2xx
      allowHosts: [127.0.0.1]           # lift the egress policy for these hosts/networks
      connection: api                   # base URL + credentials; `url` is then relative

Outputs: `status` (int), `headers` (lower-case names; repeated ones joined by
", "), `url` (after redirects), `json` (the parsed body when it is JSON, else
null), `text` (the body decoded) and `size` (bytes). A body larger than
`maxInlineBytes` (default 1 MiB) is not put in `text`/`json`: it becomes the
file output `body`, stored in the artifact store, and `text` is null.

Failures (each fails the attempt, so the node's `retry` applies):
`HttpConnectionFailed`, `HttpTimeout`, `HttpServerError` (5xx),
`HttpRateLimited` (429), `HttpStatusError` (another unexpected status, with
an excerpt of the body), `EgressDenied` (see `egress`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whenflow.domain.connections import ConnectionResolver
from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import ExecutorEnvironment, TaskContext, TaskRequest, TaskResult
from whenflow.executors.errors import InvalidTaskConfig
from whenflow.executors.http_config import (
    DEFAULT_MAX_INLINE_BYTES,
    HttpConfig,
    form_value,
    parse_http_config,
)
from whenflow.executors.http_target import (
    Scrubber,
    Target,
    base_url,
    check_url,
    connection_headers,
    connection_policy,
    join,
    lookup,
    secrets_of,
)

if TYPE_CHECKING:
    import httpx


class HttpExecutor:
    """Runs `http` tasks with httpx on the engine's loop."""

    task_type = "http"

    def __init__(
        self,
        connections: ConnectionResolver | None = None,
        *,
        max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """
        Args:
            connections: Where `connection: NAME` is looked up; None: a task naming
                one fails with a clear error.
            max_inline_bytes: The default of the task's `maxInlineBytes`.
            ssl_context: The certificates HTTPS trusts (default: certifi's bundle).
        """
        self._ssl_context = ssl_context
        self._connections = connections
        self._max_inline = max_inline_bytes
        self._spool: Path | None = None

    def check(self, task: TaskSpec) -> list[str]:
        """Problems of the task block: unknown fields, wrong types, a bad `allowHosts`."""
        problems: list[str] = []
        parse_http_config(task.config, problems, self._max_inline, rendered=False)
        return problems

    def close(self) -> None:
        """Delete the spool folder of large bodies (the artifact store holds their copies)."""
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Send the request; raise an `http_errors` error for a failed attempt."""
        problems: list[str] = []
        config = parse_http_config(request.task.config, problems, self._max_inline, rendered=True)
        if problems:
            raise InvalidTaskConfig("http", "; ".join(problems))
        target = self._target(config)
        scrub = Scrubber(target.secrets)
        try:
            return await self._send(config, target, request, ctx, scrub)
        except Exception as exc:
            raise scrub.error(exc) from None

    def _target(self, config: HttpConfig) -> Target:
        connection = lookup("http", self._connections, config.connection)
        headers: dict[str, str] = {}
        policy = config.allow
        origin_headers: tuple[str, ...] = ()
        if connection is not None:
            headers = connection_headers(connection)
            origin_headers = tuple(headers)
            policy = policy.merged(connection_policy(connection))
            url = join("http", base_url(connection), config.url)
        elif config.url is None:
            raise InvalidTaskConfig("http", "give `url` (or a `connection` whose URL is the base)")
        else:
            url = config.url
        check_url("http", url)
        secrets = secrets_of(connection, headers)
        headers.update(config.headers)
        return Target(url, headers, origin_headers, policy, secrets)

    async def _send(
        self,
        config: HttpConfig,
        target: Target,
        request: TaskRequest,
        ctx: TaskContext,
        scrub: Scrubber,
    ) -> TaskResult:
        from whenflow.executors.egress import (
            call_guard,
            guarded_client,
            send_following,
            status_error,
        )

        started = time.monotonic()
        client = guarded_client(target.policy, "http", config.timeout_s, self._ssl_context)
        async with client:
            outgoing = client.build_request(
                config.method,
                target.url,
                headers=dict(target.headers),
                params=dict(config.query) or None,
                json=config.json_body if config.has_json else None,
                **_body(config.data),
            )
            async with call_guard("http", outgoing, config.timeout_s):
                response = await send_following(
                    client,
                    outgoing,
                    max_redirects=config.max_redirects,
                    origin_only_headers=target.origin_headers,
                )
                try:
                    body, spilled = await self._read(response, config.max_inline_bytes, request)
                finally:
                    await response.aclose()
        status = response.status_code
        size = spilled.stat().st_size if spilled is not None else len(body)
        final_url = scrub.text(str(response.url))
        ctx.log(
            f"{config.method} {final_url} -> {status} ({size} bytes in "
            f"{time.monotonic() - started:.3f}s)"
        )
        text = None if spilled is not None else _decode(body, response)
        if not _expected(status, config.expect):
            shown = text if text is not None else "(a body too large to quote)"
            where = scrub.text(str(response.url.copy_with(query=None)))  # a query can be long
            raise status_error("http", config.method, where, response, shown)
        outputs: dict[str, Any] = {
            "status": status,
            "headers": _headers(response.headers),
            "url": final_url,
            "json": _json_body(text, response),
            "text": text,
            "size": size,
        }
        if spilled is not None:
            outputs["body"] = spilled
            ctx.log(f"the body ({size} bytes) is over maxInlineBytes: stored as output `body`")
        return TaskResult(outputs=scrub.value(outputs))

    async def _read(
        self, response: httpx.Response, limit: int, request: TaskRequest
    ) -> tuple[bytes, Path | None]:
        """The body in memory, or (past `limit` bytes) in a spool file."""
        chunks: list[bytes] = []
        held = 0
        stream = response.aiter_bytes()
        async for chunk in stream:
            chunks.append(chunk)
            held += len(chunk)
            if held > limit:
                return b"", await self._spill(stream, chunks, request)
        return b"".join(chunks), None

    async def _spill(
        self, stream: AsyncIterator[bytes], head: list[bytes], request: TaskRequest
    ) -> Path:
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="whenflow-http-"))
        name = f"{request.node_id}-{request.attempt}-{uuid.uuid4().hex[:8]}.body"
        path = self._spool / name
        handle = await asyncio.to_thread(path.open, "wb")
        try:
            await asyncio.to_thread(handle.write, b"".join(head))
            async for chunk in stream:
                await asyncio.to_thread(handle.write, chunk)
        finally:
            await asyncio.to_thread(handle.close)
        return path


def _expected(status: int, expect: tuple[int, ...] | None) -> bool:
    return 200 <= status < 300 if expect is None else status in expect


def _decode(body: bytes, response: httpx.Response) -> str:
    encoding = response.charset_encoding or "utf-8"
    try:
        return body.decode(encoding, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _json_body(text: str | None, response: httpx.Response) -> Any:
    if text is None:
        return None
    kind = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (kind == "application/json" or kind.endswith("+json")):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _headers(headers: httpx.Headers) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers.multi_items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _body(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if isinstance(data, Mapping):
        return {"data": {str(k): form_value(v) for k, v in data.items()}}
    if isinstance(data, bytes):
        return {"content": data}
    return {"content": str(data).encode("utf-8")}


def http_executor(environment: ExecutorEnvironment) -> HttpExecutor:
    """The `http` entry point of `whenflow.executors`."""
    return HttpExecutor(environment.connections)
