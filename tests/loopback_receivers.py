"""Real receivers on loopback for notification tests: an HTTP server and an SMTP server.

`HttpReceiver` is a `ThreadingHTTPServer` that records every POST (path,
headers, raw body) and answers 200, or an error status while `fail_next` > 0.
`SmtpReceiver` is an aiosmtpd controller that checks a login (user/pass,
over plain text: loopback only) and records every message. Both let a test
wait for N deliveries on a condition, never a sleep.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class HttpReceiver:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.fail_next = 0
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._changed:
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    else:
                        receiver.deliveries.append(
                            Delivery(self.path, {k: v for k, v in self.headers.items()}, body)
                        )
                    receiver._changed.notify_all()
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if failing else b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(f"expected {count} deliveries, got {len(self.deliveries)}")
            return list(self.deliveries)

    def on(self, path: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path == path]


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    receiver._thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        receiver._thread.join()


class SmtpReceiver:
    def __init__(self, user: str, password: str) -> None:
        self.messages: list[Message] = []
        self.logins: list[str] = []
        self._changed = threading.Condition()
        self._credentials = (user, password)
        self.port = free_port()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self._changed:
            self.messages.append(message_from_bytes(content))
            self._changed.notify_all()
        return "250 OK"

    def authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login = (data.login.decode(), data.password.decode())
            if login == self._credentials:
                self.logins.append(login[0])
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Message]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"expected {count} emails, got {len(self.messages)}")
            return list(self.messages)


@contextmanager
def smtp_receiver(user: str = "mailer", password: str = "mail-pass") -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(user, password)
    controller = Controller(
        receiver,
        hostname="127.0.0.1",
        port=receiver.port,
        authenticator=receiver.authenticate,
        auth_required=False,  # optional, so aiosmtpd does not warn; the test checks the login
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
