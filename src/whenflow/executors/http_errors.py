"""Errors of the `http` and `llm` executors, below `whenflow.domain.errors.TaskError`.

    TaskError
    ├── EgressDenied          the egress policy refused an address (DESIGN.md §10)
    ├── HttpConnectionFailed  no connection, or it broke before the answer was read
    ├── HttpTimeout           the request ran past the task's `timeout`
    ├── HttpStatusError       the answer's status is not one `expectStatus` accepts
    │   ├── HttpServerError   ... and it is a 5xx
    │   └── HttpRateLimited   ... and it is a 429 (`retry_after_s` from Retry-After)
    └── LlmAnswerError        the model's answer is not what the task asked for
        └── LlmSchemaViolation  its JSON does not match `responseSchema`

Every one fails the attempt, so the node's `retry` applies; `retryOn` names
them (`retryOn: [HttpServerError, HttpTimeout, HttpRateLimited]` retries only
what a later attempt can fix).
"""

from __future__ import annotations

from whenflow.domain.errors import TaskError

BODY_EXCERPT_CHARS = 300
"""How much of an unexpected answer's body an error message quotes."""


def excerpt(text: str, limit: int = BODY_EXCERPT_CHARS) -> str:
    """`text` on one line, cut to `limit` characters (with `...` when cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class EgressDenied(TaskError):
    """A request would reach an address the egress policy denies; allow it with `allowHosts`."""

    def __init__(self, task_type: str, host: str, address: str, reason: str) -> None:
        shown = host if host == address else f"{host} ({address})"
        super().__init__(
            f"{task_type} task: egress to {shown} refused: {reason} addresses are denied "
            "(DESIGN.md §10); if this host is meant to be reached, add it or its network to "
            "the task's `allowHosts` (or to its connection's `allowHosts`)"
        )
        self.host = host
        self.address = address
        self.reason = reason


class HttpConnectionFailed(TaskError):
    """The server could not be reached, or the connection broke; often worth a retry."""

    def __init__(self, task_type: str, url: str, detail: str) -> None:
        super().__init__(f"{task_type} task: {url}: connection failed: {detail}")
        self.url = url


class HttpTimeout(TaskError):
    """No answer within the task's `timeout`; raise it, or retry."""

    def __init__(self, task_type: str, url: str, timeout_s: float, phase: str) -> None:
        super().__init__(
            f"{task_type} task: {url}: no answer within {timeout_s:g}s ({phase} timed out); "
            "raise the task's `timeout` or retry the node"
        )
        self.url = url
        self.timeout_s = timeout_s


class HttpStatusError(TaskError):
    """The server answered with a status the task does not expect (`expectStatus`)."""

    def __init__(self, task_type: str, method: str, url: str, status: int, body: str) -> None:
        quoted = f"; body: {excerpt(body)}" if body.strip() else " (empty body)"
        super().__init__(
            f"{task_type} task: {method} {url} answered HTTP {status}, which is not an "
            f"expected status{quoted}"
        )
        self.status = status
        self.url = url
        self.body_excerpt = excerpt(body)


class HttpServerError(HttpStatusError):
    """A 5xx answer: the server failed; the node's `retry` may get a better one."""


class HttpRateLimited(HttpStatusError):
    """A 429 answer. `retry_after_s` is the server's Retry-After in seconds, when it sent one.

    The engine's retry policy reads it (`whenflow.domain.errors.retry_hint`): the
    next attempt waits at least that long, within `retry.maxDelay`.
    """

    def __init__(
        self,
        task_type: str,
        method: str,
        url: str,
        status: int,
        body: str,
        retry_after_s: float | None,
    ) -> None:
        super().__init__(task_type, method, url, status, body)
        self.retry_after_s = retry_after_s
        if retry_after_s is not None:
            self.args = (f"{self.args[0]}; the server asks to retry after {retry_after_s:g}s",)


class LlmAnswerError(TaskError):
    """The chat-completions answer cannot be used: not the protocol's JSON, or no JSON content."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"llm task: {url}: {problem}")
        self.url = url
        self.problem = problem


class LlmSchemaViolation(LlmAnswerError):
    """The model's JSON answer does not match the task's `responseSchema`."""
