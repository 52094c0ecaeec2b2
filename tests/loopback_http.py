"""A real HTTP server on 127.0.0.1 for the `http` and `llm` executor tests.

One `ThreadingHTTPServer` in a background thread, routed on the last path
segment (so it also answers under a connection's base path):

- `/echo`: the request as JSON (method, path, query, headers, body text, parsed JSON body);
- `/status?code=N&say=TEXT`: that status, with TEXT (or a fixed line) as the body;
- `/flaky?key=K&fail=N`: 500 for the first N calls with key K, then 200 `{"calls": n}`;
- `/redirect?to=URL&code=302`: a redirect to URL;
- `/big?bytes=N`: N bytes of text; `/plain`: a text/plain body; `/page`: a small HTML page;
- `/slow`: answers only once `release` is set (the test sets it when done);
- `/chat/completions`: the OpenAI chat protocol, computed from the request. The
  `model` picks the behaviour: `echo` (the last user message back), `json-echo`
  (`{"echo": <last message>, "words": n}`), `fenced-json` (the same in a ```json
  fence), `schema-violation` (`{"echo": 42}`), `malformed` (a body that is no
  JSON), `no-choices`, `rate-limit-once` (429 with `Retry-After: retry_after` on a key's
  first call), `error-once` (503 on a key's first call), `slow` (waits for
  `release`), `show-auth` (the Authorization header as the content), `summary`
  (`{"summary": <its last 12 words>, "keywords": <its 5 longest words>}`, tags dropped). `usage`
  counts words. A server made with `api_key` answers 401 to any other key.

Every request is recorded in `requests` (path, headers, JSON body) for the
assertions.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SLOW_LIMIT_S = 30.0
PAGE = (
    "<html><body><h1>Durable pipelines</h1><p>Nodes say when they run; the engine "
    "records every event so a crashed execution resumes where it stopped.</p></body></html>"
)


@dataclass
class LoopbackServer:
    url: str
    port: int
    api_key: str | None = None
    retry_after: str = "0"
    """The Retry-After header of the 429 answers."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    release: threading.Event = field(default_factory=threading.Event)
    """Set by the test (and on exit): `/slow` and the `slow` model answer then."""
    waiting: threading.Event = field(default_factory=threading.Event)
    """Set when a request starts waiting for `release`."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str) -> int:
        with self.lock:
            self.calls[key] += 1
            return self.calls[key]

    def paths(self) -> list[str]:
        with self.lock:
            return [r["path"] for r in self.requests]


def _words(text: str) -> int:
    return len(text.split())


class _Handler(BaseHTTPRequestHandler):
    server_version = "loopback/1"
    state: LoopbackServer  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        text = raw.decode("utf-8", "replace")
        try:
            body_json = json.loads(text) if text else None
        except ValueError:
            body_json = None
        record = {
            "method": self.command,
            "path": parts.path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": text,
            "json": body_json,
        }
        with self.state.lock:
            self.state.requests.append(record)
        route = parts.path.rstrip("/").rsplit("/", 1)[-1]
        if parts.path.endswith("/chat/completions"):
            self._chat(record)
        elif route == "echo":
            self._send(200, json.dumps(record).encode(), "application/json")
        elif route == "status":
            code = int(query.get("code", "200"))
            say = query.get("say", f"status {code} from the loopback server")
            self._send(code, say.encode(), "text/plain")
        elif route == "flaky":
            calls = self.state.count("flaky:" + query.get("key", ""))
            if calls <= int(query.get("fail", "1")):
                self._send(500, f"flaky failure {calls}".encode(), "text/plain")
            else:
                self._send(200, json.dumps({"calls": calls}).encode(), "application/json")
        elif route == "redirect":
            self.send_response(int(query.get("code", "302")))
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "big":
            size = int(query.get("bytes", "0"))
            self._send(200, (b"0123456789abcdef" * (size // 16 + 1))[:size], "text/plain")
        elif route == "page":
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif route == "plain":
            self._send(200, b"plain text, not JSON", "text/plain; charset=utf-8")
        elif route == "slow":
            self.state.waiting.set()
            self.state.release.wait(SLOW_LIMIT_S)
            self._send(200, b"late", "text/plain")
        else:
            self._send(404, b"no such route", "text/plain")

    def _chat(self, record: dict[str, Any]) -> None:
        request = record["json"] or {}
        key = self.state.api_key
        if key is not None and record["headers"].get("authorization") != f"Bearer {key}":
            error = {"error": {"message": "invalid api key", "type": "authentication_error"}}
            self._send(401, json.dumps(error).encode(), "application/json")
            return
        model = str(request.get("model", ""))
        messages = request.get("messages") or []
        last = str(messages[-1]["content"]) if messages else ""
        content: str
        if model == "malformed":
            self._send(200, b'{"choices": [ this is not JSON', "application/json")
            return
        if model == "no-choices":
            self._send(200, b'{"id": "x", "choices": []}', "application/json")
            return
        if model == "rate-limit-once" and self.state.count("429:" + last) == 1:
            limited = b'{"error": {"message": "slow down"}}'
            self._send(429, limited, "application/json", self.state.retry_after)
            return
        if model == "error-once" and self.state.count("503:" + last) == 1:
            self._send(503, b'{"error": {"message": "overloaded"}}', "application/json")
            return
        if model == "slow":
            self.state.waiting.set()
            self.state.release.wait(SLOW_LIMIT_S)
        if model == "json-echo":
            content = json.dumps({"echo": last, "words": _words(last)})
        elif model == "fenced-json":
            content = "```json\n" + json.dumps({"echo": last, "words": _words(last)}) + "\n```"
        elif model == "schema-violation":
            content = json.dumps({"echo": 42})
        elif model == "summary":
            words = re.sub(r"<[^>]+>", " ", last).split()
            keywords = sorted({w.strip(".,:").lower() for w in words}, key=lambda w: (-len(w), w))
            content = json.dumps({"summary": " ".join(words[-12:]), "keywords": keywords[:5]})
        elif model == "show-auth":
            content = "you sent " + record["headers"].get("authorization", "nothing")
        else:
            content = last
        prompt_tokens = sum(_words(str(m.get("content", ""))) for m in messages)
        answer = {
            "id": f"chatcmpl-{len(self.state.requests)}",
            "object": "chat.completion",
            "model": f"{model}-loopback",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": _words(content),
                "total_tokens": prompt_tokens + _words(content),
            },
        }
        self._send(200, json.dumps(answer).encode(), "application/json")

    def _send(
        self, code: int, body: bytes, content_type: str, retry_after: str | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serve(
    api_key: str | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[LoopbackServer]:
    """Run the server on 127.0.0.1 (a free port) for the duration of the block.

    With `tls` (a server-side context holding a certificate) it speaks HTTPS.
    """
    state = LoopbackServer(url="", port=0, api_key=api_key)
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    state.port = int(port)
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="loopback-http", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
