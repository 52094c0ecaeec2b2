"""The three ways a notification leaves: a signed webhook, a Slack webhook, an email.

Webhook: `POST url` with the notice as a JSON body (`Notice.to_json`) and the
headers

- `Content-Type: application/json`
- `X-Whenflow-Event: execution.failed` (or `.completed`, `.stopped`, `.waiting`)
- `X-Whenflow-Delivery: <uuid>`: the same for every retry of one message, so a
  receiver can drop a repeat;
- `X-Whenflow-Signature: sha256=<hex>` when `signingSecret` is set: the
  HMAC-SHA256 of the raw body bytes under the secret (UTF-8). A receiver
  recomputes it over the body it read and compares in constant time
  (`hmac.compare_digest`).

Slack: `POST url` with `{"text": ...}` (any Slack-compatible incoming webhook).
Email: a plain-text message over SMTP through a connection URL
`smtp://user:password@host:port` (STARTTLS when the server offers it) or
`smtps://...` (TLS from the start); no user, no login.

Every sender raises `DeliveryFailed` with words a person can act on; the
notifier retries it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx

from whenflow.domain.connections import Connection
from whenflow.domain.errors import WhenflowError

SIGNATURE_HEADER = "X-Whenflow-Signature"
DELIVERY_HEADER = "X-Whenflow-Delivery"
EVENT_HEADER = "X-Whenflow-Event"
_BODY_PREVIEW = 200


class DeliveryFailed(WhenflowError):
    """A notification could not be delivered (this attempt); the message says why."""


def sign(secret: str, body: bytes) -> str:
    """The `X-Whenflow-Signature` value of `body`: `sha256=` + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(
            f"could not reach the receiver ({type(exc).__name__}: {exc}); "
            "check the URL and that it is up"
        ) from exc
    if response.status_code >= 300:
        preview = response.text[:_BODY_PREVIEW]
        raise DeliveryFailed(f"the receiver answered HTTP {response.status_code}: {preview}")


async def post_webhook(
    client: httpx.AsyncClient,
    url: str,
    payload: Mapping[str, Any],
    *,
    event: str,
    delivery_id: str,
    signing_secret: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """POST the payload as JSON, signed when a secret is given; raises DeliveryFailed."""
    body = encode_body(payload)
    sent = {
        **dict(headers or {}),
        "Content-Type": "application/json",
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
    }
    if signing_secret:
        sent[SIGNATURE_HEADER] = sign(signing_secret, body)
    await _post(client, url, body, sent)


async def post_slack(client: httpx.AsyncClient, url: str, text: str) -> None:
    """POST `{"text": text}` to a Slack-compatible incoming webhook; raises DeliveryFailed."""
    await _post(client, url, encode_body({"text": text}), {"Content-Type": "application/json"})


async def send_email(
    connection: Connection,
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    text: str,
    timeout_s: float,
) -> None:
    """Send a plain-text email through the SMTP server of `connection`; raises DeliveryFailed."""
    if connection.scheme not in ("smtp", "smtps"):
        raise DeliveryFailed(
            f"connection {connection.name!r} is not an SMTP URL; "
            "write smtp://user:password@host:port or smtps://..."
        )
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(text)
    tls = connection.scheme == "smtps"
    try:
        await aiosmtplib.send(
            message,
            hostname=connection.host or "localhost",
            port=connection.port or (465 if tls else 25),
            username=connection.login,
            password=connection.password,
            use_tls=tls,
            timeout=timeout_s,
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(
            f"the SMTP server of connection {connection.name!r} refused or could not be "
            f"reached ({type(exc).__name__}: {exc})"
        ) from exc
