"""httpx behind the egress policy (`egress_policy`, DESIGN.md §10), checked at connect time.

The check runs where the socket is opened, not on the URL: `GuardedBackend`
is the httpcore network backend of the task's client; it resolves the host,
checks every address the name resolves to (one denied address refuses the
request, so a name cannot mix a public and a private answer), then connects
to a checked address itself. TLS still verifies the certificate of, and
sends SNI for, the URL's host name (httpcore passes it to `start_tls`), and
the `Host` header is the URL's. A DNS answer that changes between check and
connect (rebinding) cannot matter: nothing resolves the name again. Every
redirect is a new request through the same client, so it is checked the same
way (`send_following` follows them itself, a bounded number of times).
Proxies from the environment are ignored (`trust_env=False`): a proxy would
make the connect go to the proxy, past the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from whenflow.executors.egress_policy import EgressPolicy, IPAddress
from whenflow.executors.http_errors import (
    EgressDenied,
    HttpConnectionFailed,
    HttpRateLimited,
    HttpServerError,
    HttpStatusError,
    HttpTimeout,
)

Resolver = Callable[[str, int], Awaitable[list[tuple[Any, ...]]]]
"""`getaddrinfo`-like: (host, port) -> [(family, type, proto, canonname, sockaddr), ...]."""


async def system_resolver(host: str, port: int) -> list[tuple[Any, ...]]:
    """The system's resolver (`getaddrinfo`), run off the loop."""
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)


async def _resolve(
    host: str, port: int, limit_s: float | None, resolver: Resolver
) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(resolver(host, port), limit_s)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host!r} took longer than {limit_s}s") from None
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise httpcore.ConnectError(f"{host!r} resolves to no address")
    return found


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address against the policy, then connects to a checked one."""

    def __init__(
        self, policy: EgressPolicy, task_type: str, resolver: Resolver = system_resolver
    ) -> None:
        self._policy = policy
        self._task_type = task_type
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _resolve(host, port, timeout, self._resolver)
        for address in addresses:
            reason = self._policy.refusal(host, address)
            if reason is not None:
                raise EgressDenied(self._task_type, host, str(address), reason)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable from http tasks")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """httpx's default context (certifi's bundle), made once: loading it costs ~10 ms."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on a `GuardedBackend`."""

    def __init__(
        self,
        policy: EgressPolicy,
        task_type: str,
        ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        context = ssl_context or default_ssl_context()
        super().__init__(verify=context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, network_backend=GuardedBackend(policy, task_type, resolver)
        )


def guarded_client(
    policy: EgressPolicy,
    task_type: str,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    resolver: Resolver = system_resolver,
) -> httpx.AsyncClient:
    """An httpx client whose every connection passes the policy; redirects are not followed.

    `ssl_context`: the certificates to trust (default: httpx's, from certifi);
    `resolver`: how host names become addresses (default: the system's).
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, task_type, ssl_context, resolver),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
    )


async def send_following(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    max_redirects: int,
    origin_only_headers: Sequence[str] = (),
) -> httpx.Response:
    """Send `request`, following up to `max_redirects` redirects, each one checked anew.

    With `max_redirects=0` a redirect is the answer (its status decides).

        The response is streamed: the caller reads and closes it. httpx builds each
        redirect (method and body rules, `Authorization` dropped across origins);
        `origin_only_headers` (a connection's own headers) are dropped across
        origins too. Raises httpx.TooManyRedirects past the bound, and whatever a
        request raises (EgressDenied for a refused address).
    """
    first_origin = (request.url.scheme, request.url.host, request.url.port)
    response = await client.send(request, stream=True)
    hops = 0
    while response.next_request is not None and max_redirects > 0:
        if hops >= max_redirects:
            await response.aclose()
            raise httpx.TooManyRedirects(
                f"more than {max_redirects} redirects (raise the task's `maxRedirects`)",
                request=request,
            )
        hops += 1
        following = response.next_request
        await response.aclose()
        if following.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"a redirect to {following.url.scheme!r}: only http and https are followed",
                request=following,
            )
        if (following.url.scheme, following.url.host, following.url.port) != first_origin:
            for name in origin_only_headers:
                following.headers.pop(name, None)
        response = await client.send(following, stream=True)
    return response


@contextlib.asynccontextmanager
async def call_guard(
    task_type: str, request: httpx.Request, timeout_s: float
) -> AsyncIterator[None]:
    """Turns httpx's exceptions into the attempt failures of `http_errors`."""
    url = str(request.url.copy_with(query=None))
    try:
        yield
    except httpx.TimeoutException as exc:
        phase = type(exc).__name__.removesuffix("Timeout").lower() or "request"
        raise HttpTimeout(task_type, url, timeout_s, phase) from None
    except httpx.TransportError as exc:  # also UnsupportedProtocol (a redirect to ftp:)
        raise HttpConnectionFailed(task_type, url, str(exc) or type(exc).__name__) from None
    except httpx.TooManyRedirects as exc:
        raise HttpConnectionFailed(task_type, url, str(exc)) from None


def status_error(
    task_type: str, method: str, url: str, response: httpx.Response, body: str
) -> HttpStatusError:
    """The error for an unexpected status: 5xx, 429 (with Retry-After) or another."""
    status = response.status_code
    if status >= 500:
        return HttpServerError(task_type, method, url, status, body)
    if status == 429:
        retry_after = retry_after_s(response.headers.get("retry-after"))
        return HttpRateLimited(task_type, method, url, status, body, retry_after)
    return HttpStatusError(task_type, method, url, status, body)


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
