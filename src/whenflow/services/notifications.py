"""Tell someone how an execution ended, or that an approval waits (`spec.notify`, DESIGN.md §12).

The services call the `Notifier` where an outcome is known (`ExecutionService`:
the end of `run` and `resume`, an approval's `<node>.waiting` event); the
engine knows nothing of it. Each matching rule becomes one background task:

- the rule's fields are rendered (templates, `secret('NAME')`); every secret
  read is masked, with the secrets of the execution already masked by the
  engine, in everything sent and stored;
- the message is sent (`notify_channels`), retried on failure with
  exponential backoff (`NotifyPolicy`), then recorded as `sent` or `failed`
  with its last error in the `notifications` table.

A notification never changes the execution's outcome: it starts after the
outcome is durable, and its failure is only recorded (and logged).
`drain()` waits for the notifications still being sent (a `whenflow run`
process does before it exits).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from whenflow.domain.connections import ConnectionResolver
from whenflow.domain.definitions import PipelineDefinition
from whenflow.domain.events import Event
from whenflow.domain.schedules import Channel, NotifyOn, NotifyRule
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.dsl.program import PipelineProgram
from whenflow.dsl.templates import compile_template
from whenflow.engine.ports import SecretStore
from whenflow.engine.runtime import ExecutionResult
from whenflow.engine.secret_masking import SecretMask
from whenflow.services.notify_channels import (
    DeliveryFailed,
    post_slack,
    post_webhook,
    send_email,
)
from whenflow.storage import notifications

_log = logging.getLogger("whenflow.notifications")
DEFAULT_SENDER = "whenflow@localhost"
_OUTCOMES: Mapping[ExecutionStatus, NotifyOn] = {
    ExecutionStatus.COMPLETED: NotifyOn.COMPLETED,
    ExecutionStatus.FAILED: NotifyOn.FAILED,
    ExecutionStatus.STOPPED: NotifyOn.STOPPED,
    ExecutionStatus.CANCELLED: NotifyOn.STOPPED,
}


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """Attempts per message and the waits between them (seconds, doubling, capped)."""

    attempts: int = 4
    delay_s: float = 1.0
    max_delay_s: float = 30.0
    timeout_s: float = 10.0
    """Per attempt: an HTTP request or an SMTP conversation."""

    def delay_after(self, attempt: int) -> float:
        return float(min(self.delay_s * 2 ** (attempt - 1), self.max_delay_s))


@dataclass(frozen=True, slots=True)
class Notice:
    """What a notification says: the outcome, the pipeline, the execution, the failed
    (or waiting) node and its error, and a link when the server's base URL is known."""

    outcome: NotifyOn
    pipeline: str
    version: str
    execution_id: str
    status: str
    node: str | None
    error: str | None
    link: str | None
    at: float

    def to_json(self) -> dict[str, Any]:
        """The webhook body."""
        return {
            "event": f"execution.{self.outcome.value}",
            "pipeline": self.pipeline,
            "version": self.version,
            "executionId": self.execution_id,
            "status": self.status,
            "node": self.node,
            "error": self.error,
            "url": self.link,
            "at": dt.datetime.fromtimestamp(self.at, dt.UTC).isoformat(),
        }

    @property
    def subject(self) -> str:
        if self.outcome is NotifyOn.WAITING:
            return f"[whenflow] {self.pipeline}: {self.node} waits for approval"
        return f"[whenflow] {self.pipeline} {self.status}"

    def text(self) -> str:
        """The message of Slack and email: one line per fact."""
        lines = [f"{self.subject} (execution {self.execution_id}, version {self.version})"]
        if self.node and self.outcome is not NotifyOn.WAITING:
            lines.append(f"node: {self.node}")
        if self.error:
            lines.append(f"error: {self.error}")
        if self.link:
            lines.append(self.link)
        return "\n".join(lines)


def notice_of_result(result: ExecutionResult, base_url: str | None, at: float) -> Notice | None:
    """The notice of an ended execution, None while it has not ended."""
    outcome = _OUTCOMES.get(result.status)
    if outcome is None:
        return None
    failed = next(
        ((node_id, n.error) for node_id, n in result.nodes.items() if n.status is NodeState.FAILED),
        None,
    )
    node, node_error = failed if failed is not None else (None, None)
    return Notice(
        outcome=outcome,
        pipeline=result.pipeline,
        version=result.version,
        execution_id=result.execution_id,
        status=str(result.status),
        node=node,
        error=node_error or result.error,
        link=_link(base_url, result.execution_id),
        at=at,
    )


def _link(base_url: str | None, execution_id: str) -> str | None:
    return None if not base_url else f"{base_url.rstrip('/')}/executions/{execution_id}"


Sleep = Callable[[float], Awaitable[None]]
EventListener = Callable[[Event], None]


def listener(
    notifier: Notifier, program: PipelineProgram, on_event: EventListener | None
) -> EventListener | None:
    """`on_event`, with `notifier` told of the approvals that start waiting."""
    if not program.definition.notify:
        return on_event
    approvals = {n.id for n in program.nodes if n.approval is not None}

    def listen(event: Event) -> None:
        notifier.on_event(program.definition, event, approvals)
        if on_event is not None:
            on_event(event)

    return listen


@dataclass(frozen=True, slots=True)
class NotificationView:
    """A notification as shown: `outcome`, `channel`, `status` (sent, failed), `attempts`,
    `error` (masked; None when sent), `at` (ISO 8601, when it was settled)."""

    outcome: str
    channel: str
    status: str
    attempts: int
    error: str | None
    at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "channel": self.channel,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "at": self.at,
        }


async def notifications_of(engine: AsyncEngine, execution_id: str) -> list[NotificationView]:
    """What became of the notifications of an execution, oldest first."""
    rows = await notifications.list_for(engine, execution_id)
    return [
        NotificationView(
            r.outcome,
            r.channel,
            r.status,
            r.attempts,
            r.error,
            None
            if r.finished_at is None
            else dt.datetime.fromtimestamp(r.finished_at, dt.UTC).isoformat(),
        )
        for r in rows
    ]


class Notifier:
    """Sends the notifications of `spec.notify` in the background (module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        secrets: SecretStore,
        connections: ConnectionResolver,
        base_url: str | None = None,
        policy: NotifyPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Args:
        engine: where the outcome of each notification is recorded.
        base_url: the server's public URL; messages link to `<base_url>/executions/<id>`.
        sleep: waits between attempts (a test passes a fake clock's).
        """
        self._engine = engine
        self._secrets = secrets
        self._connections = connections
        self.base_url = base_url
        self.policy = policy or NotifyPolicy()
        self._sleep = sleep
        self._tasks: set[asyncio.Task[None]] = set()

    def on_result(self, definition: PipelineDefinition, result: ExecutionResult) -> None:
        """Notify the rules that listen for how `result` ended (nothing if it has not)."""
        if not definition.notify:
            return
        notice = notice_of_result(result, self.base_url, time.time())
        if notice is not None:
            self._dispatch(definition, notice)

    def on_event(self, definition: PipelineDefinition, event: Event, approvals: set[str]) -> None:
        """Notify `waiting` rules when an approval node (`approvals`) starts waiting."""
        if not definition.notify or event.event_type != f"{event.source}.waiting":
            return
        if event.source not in approvals:
            return
        message = event.payload.get("message")
        notice = Notice(
            outcome=NotifyOn.WAITING,
            pipeline=definition.name,
            version=definition.version,
            execution_id=event.execution_id,
            status=str(ExecutionStatus.WAITING),
            node=event.source,
            error=None if message is None else str(message),
            link=_link(self.base_url, event.execution_id),
            at=event.timestamp,
        )
        self._dispatch(definition, notice)

    def _dispatch(self, definition: PipelineDefinition, notice: Notice) -> None:
        for rule in definition.notify:
            if notice.outcome in rule.on:
                task = asyncio.create_task(
                    self._deliver(rule, notice), name=f"whenflow-notify:{notice.execution_id}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Notifications still being sent."""
        return len(self._tasks)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the notifications being sent; those left after `timeout_s` are cancelled."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(self, rule: NotifyRule, notice: Notice) -> None:
        mask = SecretMask()
        created = time.time()
        attempts, error = 0, None
        delivery_id = str(uuid.uuid4())
        try:
            settings = self._render(rule.settings, mask)
            masked = _masked_notice(notice, mask)
            async with httpx.AsyncClient(timeout=self.policy.timeout_s) as client:
                while True:
                    attempts += 1
                    try:
                        await self._send(client, rule.channel, settings, masked, delivery_id)
                        error = None
                        break
                    except DeliveryFailed as exc:
                        error = mask.value(str(exc))
                    if attempts >= self.policy.attempts:
                        break
                    await self._sleep(self.policy.delay_after(attempts))
        except Exception as exc:  # a template or connection problem: not worth retrying
            error = mask.value(f"{type(exc).__name__}: {exc}")
        status = "sent" if error is None else "failed"
        if error is not None:
            _log.warning(
                "notification %s of execution %s failed after %d attempt(s): %s",
                rule.channel.value,
                notice.execution_id,
                attempts,
                error,
            )
        row = notifications.NotificationRow(
            notice.execution_id,
            notice.outcome.value,
            rule.channel.value,
            status,
            attempts,
            error,
            created,
            time.time(),
        )
        try:
            await notifications.record(self._engine, row)
        except Exception:
            _log.warning("could not record a notification's outcome", exc_info=True)

    def _render(self, settings: Mapping[str, Any], mask: SecretMask) -> dict[str, Any]:
        def secret(name: str) -> str:
            value = self._secrets.get(str(name))
            if value is None:
                raise DeliveryFailed(f"secret({name!r}) is not set: {self._secrets.describe(name)}")
            mask.reveal(value)
            return value

        def render(value: Any) -> Any:
            if isinstance(value, str):
                rendered = compile_template(value).evaluate({"secret": secret})
                return rendered if isinstance(rendered, str) else str(rendered)
            if isinstance(value, list):
                return [render(v) for v in value]
            if isinstance(value, dict):
                return {k: render(v) for k, v in value.items()}
            return value

        return {k: render(v) for k, v in settings.items()}

    async def _send(
        self,
        client: httpx.AsyncClient,
        channel: Channel,
        settings: Mapping[str, Any],
        notice: Notice,
        delivery_id: str,
    ) -> None:
        if channel is Channel.WEBHOOK:
            await post_webhook(
                client,
                settings["url"],
                notice.to_json(),
                event=f"execution.{notice.outcome.value}",
                delivery_id=delivery_id,
                signing_secret=settings.get("signingSecret"),
                headers=settings.get("headers"),
            )
        elif channel is Channel.SLACK:
            await post_slack(client, settings["url"], notice.text())
        else:
            connection = self._connections.get(settings.get("connection", "smtp"))
            await send_email(
                connection,
                sender=settings.get("from") or DEFAULT_SENDER,
                to=settings["to"],
                subject=settings.get("subject") or notice.subject,
                text=notice.text(),
                timeout_s=self.policy.timeout_s,
            )


def _masked_notice(notice: Notice, mask: SecretMask) -> Notice:
    if not mask:
        return notice
    return Notice(
        outcome=notice.outcome,
        pipeline=notice.pipeline,
        version=notice.version,
        execution_id=notice.execution_id,
        status=notice.status,
        node=notice.node,
        error=mask.value(notice.error),
        link=notice.link,
        at=notice.at,
    )
