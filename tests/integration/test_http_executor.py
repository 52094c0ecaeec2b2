"""The `http` executor against a real HTTP server on loopback, and its egress policy."""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trustme

from loopback_http import LoopbackServer, serve
from taskfuncs.recording import RecordingContext
from whenflow.domain.connections import Connection, UnknownConnection
from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import TaskRequest
from whenflow.executors.errors import InvalidTaskConfig
from whenflow.executors.http import HttpExecutor
from whenflow.executors.http_errors import (
    EgressDenied,
    HttpConnectionFailed,
    HttpRateLimited,
    HttpServerError,
    HttpStatusError,
    HttpTimeout,
)
from whenflow.storage.connections import EnvironmentConnections

LOCAL = ["127.0.0.1"]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as running:
        yield running


@pytest.fixture
def executor() -> Iterator[HttpExecutor]:
    http = HttpExecutor()
    yield http
    http.close()


def http_request(**config: Any) -> TaskRequest:
    return TaskRequest(
        execution_id="exec-1",
        node_id="fetch",
        attempt=1,
        task=TaskSpec(type="http", config=config),
        inputs={},
        idempotency_key="exec-1/fetch",
    )


async def call(executor: HttpExecutor, **config: Any) -> Mapping[str, Any]:
    result = await executor.execute(http_request(**config), RecordingContext())
    return result.outputs


class Connections:
    """A ConnectionResolver over fixed connections (the file-backed one is another branch's)."""

    def __init__(self, *connections: Connection) -> None:
        self._by_name = {c.name: c for c in connections}

    def get(self, name: str) -> Connection:
        if name not in self._by_name:
            raise UnknownConnection(name, self.names())
        return self._by_name[name]

    def names(self) -> list[str]:
        return sorted(self._by_name)


async def test_get_with_query_and_headers(server: LoopbackServer, executor: HttpExecutor) -> None:
    out = await call(
        executor,
        url=f"{server.url}/echo",
        query={"page": 2, "q": "a b&c"},
        headers={"X-Trace": "t-1"},
        allowHosts=LOCAL,
    )
    assert out["status"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["json"]["method"] == "GET"
    assert out["json"]["query"] == {"page": "2", "q": "a b&c"}
    assert out["json"]["headers"]["x-trace"] == "t-1"
    assert out["text"].startswith("{")
    assert out["size"] == len(out["text"])
    assert out["url"].startswith(f"{server.url}/echo?")


async def test_json_form_and_raw_bodies(server: LoopbackServer, executor: HttpExecutor) -> None:
    sent = await call(
        executor, method="post", url=f"{server.url}/echo", json={"n": [1, 2]}, allowHosts=LOCAL
    )
    assert sent["json"]["method"] == "POST"
    assert sent["json"]["json"] == {"n": [1, 2]}
    assert sent["json"]["headers"]["content-type"] == "application/json"
    form = await call(
        executor,
        method="PUT",
        url=f"{server.url}/echo",
        data={"a": 1, "b": "x y"},
        allowHosts=LOCAL,
    )
    assert form["json"]["body"] == "a=1&b=x+y"
    assert form["json"]["headers"]["content-type"] == "application/x-www-form-urlencoded"
    raw = await call(
        executor,
        method="POST",
        url=f"{server.url}/echo",
        data="line one\nline two",
        headers={"Content-Type": "text/csv"},
        allowHosts=LOCAL,
    )
    assert raw["json"]["body"] == "line one\nline two"
    assert raw["json"]["headers"]["content-type"] == "text/csv"


async def test_a_text_body_has_no_json(server: LoopbackServer, executor: HttpExecutor) -> None:
    out = await call(executor, url=f"{server.url}/plain", allowHosts=LOCAL)
    assert out["text"] == "plain text, not JSON"
    assert out["json"] is None


async def test_expect_status(server: LoopbackServer, executor: HttpExecutor) -> None:
    url = f"{server.url}/status"
    out = await call(
        executor, url=url, query={"code": 404}, expectStatus=[200, 404], allowHosts=LOCAL
    )
    assert out["status"] == 404
    with pytest.raises(HttpStatusError) as refused:
        await call(executor, url=url, query={"code": 404, "say": "gone " * 200}, allowHosts=LOCAL)
    message = str(refused.value)
    assert type(refused.value) is HttpStatusError
    assert "HTTP 404" in message
    assert "body: gone gone" in message
    assert len(message) < 600  # a bounded excerpt, not the 1000-character body
    with pytest.raises(HttpServerError, match="HTTP 503"):
        await call(executor, url=url, query={"code": 503}, allowHosts=LOCAL)
    with pytest.raises(HttpStatusError, match="HTTP 200"):
        await call(executor, url=url, expectStatus=201, allowHosts=LOCAL)


async def test_a_429_carries_retry_after(server: LoopbackServer, executor: HttpExecutor) -> None:
    with pytest.raises(HttpRateLimited) as limited:
        await call(
            executor,
            method="POST",
            url=f"{server.url}/chat/completions",
            json={"model": "rate-limit-once", "messages": [{"role": "user", "content": "x"}]},
            allowHosts=LOCAL,
        )
    assert limited.value.retry_after_s == 0.0
    assert limited.value.status == 429


async def test_timeouts_and_refused_connections(
    server: LoopbackServer, executor: HttpExecutor
) -> None:
    with pytest.raises(HttpTimeout, match=r"no answer within 0.3s"):
        await call(executor, url=f"{server.url}/slow", timeout="300ms", allowHosts=LOCAL)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(HttpConnectionFailed, match=f"127.0.0.1:{port}"):
        await call(executor, url=f"http://127.0.0.1:{port}/x", allowHosts=LOCAL)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.1:{port}/echo", "loopback"),
        ("http://[::1]:{port}/echo", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:{port}/echo", "unspecified"),
        ("http://[::ffff:127.0.0.1]:{port}/echo", "loopback"),
        ("http://localhost:{port}/echo", "loopback"),
    ],
)
async def test_the_egress_policy_refuses_internal_addresses(
    server: LoopbackServer, executor: HttpExecutor, url: str, reason: str
) -> None:
    with pytest.raises(EgressDenied, match=f"{reason} addresses are denied") as denied:
        await call(executor, url=url.format(port=server.port), timeout=2)
    assert "allowHosts" in str(denied.value)
    assert server.paths() == []  # refused before any byte was sent


async def test_allow_hosts_by_name_and_by_network(
    server: LoopbackServer, executor: HttpExecutor
) -> None:
    by_name = await call(
        executor, url=f"http://localhost:{server.port}/echo", allowHosts=["localhost"]
    )
    assert by_name["json"]["headers"]["host"] == f"localhost:{server.port}"  # the Host header
    by_network = await call(executor, url=f"{server.url}/echo", allowHosts=["127.0.0.0/8"])
    assert by_network["status"] == 200
    with pytest.raises(EgressDenied):  # a name allows that name only, not its address
        await call(executor, url=f"{server.url}/echo", allowHosts=["localhost"])


async def test_every_redirect_is_checked(server: LoopbackServer, executor: HttpExecutor) -> None:
    start = f"http://localhost:{server.port}/redirect"
    followed = await call(
        executor,
        url=start,
        query={"to": f"http://localhost:{server.port}/echo"},
        allowHosts=["localhost"],
    )
    assert followed["status"] == 200
    assert followed["url"].endswith("/echo")
    assert server.paths() == ["/redirect", "/echo"]
    for target in (
        "http://169.254.169.254/latest/meta-data/iam/",
        f"http://127.0.0.1:{server.port}/echo",
        "http://10.0.0.1/",
    ):
        with pytest.raises(EgressDenied):
            await call(executor, url=start, query={"to": target}, allowHosts=["localhost"])
    assert server.paths()[2:] == ["/redirect"] * 3  # the denied targets got nothing
    with pytest.raises(HttpStatusError, match="HTTP 302"):
        await call(
            executor, url=start, query={"to": "/echo"}, maxRedirects=0, allowHosts=["localhost"]
        )
    with pytest.raises(HttpConnectionFailed, match="more than 2 redirects"):
        await call(
            executor,
            url=f"{server.url}/redirect",
            query={"to": f"{server.url}/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/echo"},
            maxRedirects=2,
            allowHosts=LOCAL,
        )


async def test_a_large_body_becomes_a_file_output(
    server: LoopbackServer, executor: HttpExecutor
) -> None:
    out = await call(
        executor,
        url=f"{server.url}/big",
        query={"bytes": 50_000},
        maxInlineBytes=4096,
        allowHosts=LOCAL,
    )
    assert out["text"] is None
    assert out["json"] is None
    assert out["size"] == 50_000
    body = out["body"]
    assert isinstance(body, Path)
    assert body.stat().st_size == 50_000
    assert body.read_bytes().startswith(b"0123456789abcdef")
    executor.close()
    assert not body.exists()  # the spool is the executor's, removed on close


async def test_a_connection_gives_base_url_credentials_and_permission(
    server: LoopbackServer,
) -> None:
    secret = "canary-conn-pass-4417"
    env = {"WHENFLOW_CONN_API": f"http://robot:{secret}@127.0.0.1:{server.port}/v2"}
    executor = HttpExecutor(EnvironmentConnections(env))
    out = await call(executor, connection="api", url="echo")  # no allowHosts needed
    seen = server.requests[-1]
    assert seen["path"] == "/v2/echo"
    expected = base64.b64encode(f"robot:{secret}".encode()).decode()
    assert seen["headers"]["authorization"] == f"Basic {expected}"
    assert secret not in repr(out)  # scrubbed from outputs
    assert expected not in repr(out)
    assert out["json"]["headers"]["authorization"] == "Basic ***"
    with pytest.raises(InvalidTaskConfig, match="not on its connection's origin"):
        await call(executor, connection="api", url="http://example.com/steal")
    with pytest.raises(InvalidTaskConfig, match="WHENFLOW_CONN_NOPE"):
        await call(executor, connection="nope", url="x")
    with pytest.raises(InvalidTaskConfig, match="without connections configured"):
        await call(HttpExecutor(), connection="api", url="echo")


async def test_connection_headers_do_not_follow_a_redirect_elsewhere(
    server: LoopbackServer,
) -> None:
    api = Connection(
        name="api",
        url=f"http://127.0.0.1:{server.port}",
        extra={"headers": {"X-Api-Key": "key-canary-88"}, "allowHosts": ["localhost"]},
    )
    executor = HttpExecutor(Connections(api))
    same = await call(executor, connection="api", url="echo")
    assert server.requests[-1]["headers"]["x-api-key"] == "key-canary-88"
    assert same["status"] == 200
    away = await call(
        executor,
        connection="api",
        url="redirect",
        query={"to": f"http://localhost:{server.port}/echo"},
    )
    assert away["url"] == f"http://localhost:{server.port}/echo"
    assert "x-api-key" not in server.requests[-1]["headers"]


async def test_an_error_never_shows_the_connections_secret(server: LoopbackServer) -> None:
    token = "tok-canary-5521-abc"
    api = Connection(name="api", url=server.url, extra={"token": token})
    executor = HttpExecutor(Connections(api))
    with pytest.raises(HttpStatusError) as refused:
        await call(
            executor,
            connection="api",
            url="status",
            query={"code": 403, "say": f"bad token {token}"},
        )
    assert token not in str(refused.value)
    assert "bad token ***" in str(refused.value)


def test_check_reports_configuration_problems() -> None:
    check = HttpExecutor().check
    assert check(TaskSpec(type="http", config={"url": "https://x.example", "timeout": "5s"})) == []
    templated = {"url": "{{ pipeline.input.url }}", "headers": "{{ upstream.headers }}"}
    assert check(TaskSpec(type="http", config=templated)) == []
    problems = check(
        TaskSpec(
            type="http",
            config={
                "url": "https://x.example",
                "method": "FETCH",
                "expectStatus": [200, "ok"],
                "allowHosts": ["10.0.0.0/33x"],
                "timeout": "soon",
                "json": {},
                "data": "x",
                "colour": "red",
            },
        )
    )
    text = "\n".join(problems)
    for part in ("method", "expectStatus", "allowHosts", "timeout", "not both", "colour"):
        assert part in text
    nothing = check(TaskSpec(type="http", config={"query": {"a": {"nested": 1}}}))
    assert "give `url` (or a `connection` whose URL is the base)" in nothing
    assert "`query.a` must be a value or a list of values" in nothing


async def test_https_checks_the_url_host_while_connecting_to_the_checked_address() -> None:
    ca = trustme.CA()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_tls)  # names localhost, not 127.0.0.1
    sni: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    with serve(tls=server_tls) as server:
        executor = HttpExecutor(ssl_context=trusting)
        by_name = f"https://localhost:{server.port}/echo"
        out = await call(executor, url=by_name, allowHosts=["localhost"])
        assert out["status"] == 200
        assert out["json"]["headers"]["host"] == f"localhost:{server.port}"
        assert sni == ["localhost"]  # SNI is the URL's name, the socket went to 127.0.0.1
        with pytest.raises(HttpConnectionFailed, match="certificate verify failed"):
            await call(executor, url=f"https://127.0.0.1:{server.port}/echo", allowHosts=LOCAL)
        with pytest.raises(HttpConnectionFailed, match="certificate verify failed"):
            await call(HttpExecutor(), url=by_name, allowHosts=["localhost"])
    assert [r["path"] for r in server.requests] == ["/echo"]
