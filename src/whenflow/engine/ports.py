"""The Protocols the engine needs from the layers below it.

`whenflow.storage` implements `StateStore` and `ArtifactStore` for real;
`whenflow.backends` implements `TaskRunner`; `whenflow.testing` ships an
in-memory fake of each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from whenflow.domain.errors import StoreError
from whenflow.domain.records import ExecutionSnapshot, InboxMessage, Record
from whenflow.domain.task_io import TaskContext, TaskRequest, TaskResult
from whenflow.domain.variables import ArtifactRef


class StateStore(Protocol):
    """Durable home of executions; writes go through an ordered buffer."""

    def append(self, records: Sequence[Record]) -> None:
        """Queue records for the next group commit; never blocks the caller."""
        ...

    async def flush(self) -> None:
        """Return once everything appended so far is committed (a flush barrier)."""
        ...

    async def load_execution(self, execution_id: str) -> ExecutionSnapshot:
        """The durable state of one execution; raises ExecutionNotFound."""
        ...

    async def pending_messages(self, execution_id: str) -> Sequence[InboxMessage]:
        """Inbox messages to this execution not yet marked applied, oldest first."""
        ...

    async def claim(self, execution_id: str) -> None:
        """Own an existing execution before continuing it (DESIGN.md §7, one owner).

        Creating an execution owns it already. Raises ExecutionOwned while
        another process holds a live lease on it.
        """
        ...

    def failure(self) -> asyncio.Future[StoreError]:
        """Set with the error once a commit fails (nothing after it is durable)."""
        ...


class ArtifactStore(Protocol):
    """Where large values and files live; the pool keeps only an ArtifactRef."""

    def put_value(self, key: str, value: Any) -> ArtifactRef:
        """Store a JSON-serialisable value under `key`."""
        ...

    def put_file(self, key: str, path: str) -> ArtifactRef:
        """Copy a local file into the store under `key`."""
        ...

    def put_dir(self, key: str, path: str) -> ArtifactRef:
        """Copy a local directory into the store under `key` (kind `directory`)."""
        ...

    def load_value(self, ref: ArtifactRef) -> Any:
        """The JSON value behind a `value` reference."""
        ...

    def local_path(self, ref: ArtifactRef) -> str:
        """A local filesystem path holding the artifact (a directory for `directory`)."""
        ...

    def verify(self, ref: ArtifactRef) -> None:
        """Raise (naming the artifact) if its bytes no longer match the reference's sha256."""
        ...


class SecretStore(Protocol):
    """Where `{{ secret('NAME') }}` reads from (environment variables, later a vault)."""

    def get(self, name: str) -> str | None:
        """The secret's value, or None when it is not set."""
        ...

    def describe(self, name: str) -> str:
        """Where the secret would be set, for an error message."""
        ...


class TaskRunner(Protocol):
    """Decides where a task attempt runs (in-process, a process pool, Celery...)."""

    def knows(self, task_type: str) -> bool:
        """Whether an executor is registered for this task type."""
        ...

    def check(self, request_task: Any) -> list[str]:
        """Configuration problems of a TaskSpec, found without running it."""
        ...

    async def run(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Run one attempt to its end; raise to fail it; honour cancellation."""
        ...
