"""What passes between the engine and an executor: one request in, one result out.

Executors implement `Executor`; the engine hands them a `TaskRequest` and a
`TaskContext` and gets a `TaskResult` back, or an exception for a failed attempt.
Adding a field to these dataclasses breaks no executor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from whenflow.domain.connections import Connection, ConnectionResolver
from whenflow.domain.definitions import TaskSpec


def input_variable(name: str) -> str:
    """The environment variable carrying input `name` to a process: `WF_INPUT_<NAME>`.

    Characters other than letters, digits and `_` become `_` and letters are
    upper-cased, so two names can meet (`a-b`, `a_b`, `A.B`); a pipeline that
    binds both to one shell task is refused at load time.
    """
    return "WF_INPUT_" + re.sub(r"[^A-Za-z0-9_]", "_", name).upper()


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """One attempt of one task (or of one forEach item).

    `idempotency_key` is the same for every attempt of the same node (and item),
    so an outside system can deduplicate; `attempt` is the fencing token.
    """

    execution_id: str
    node_id: str
    attempt: int
    task: TaskSpec
    inputs: Mapping[str, Any]
    idempotency_key: str
    item_index: int | None = None
    timeout_s: float | None = None
    workdir: str | None = None


@dataclass(frozen=True, slots=True)
class TaskResult:
    """The outputs of a successful attempt, by name.

    `scratch` names local files the executor wrote only to hand them over as
    `Path` outputs (a Parquet result): the engine deletes them once it has
    copied the outputs into the artifact store, whatever the outcome.
    """

    outputs: Mapping[str, Any] = field(default_factory=dict)
    scratch: tuple[str, ...] = ()


class TaskContext(Protocol):
    """What a running task may do besides returning outputs."""

    @property
    def execution_id(self) -> str: ...

    @property
    def node_id(self) -> str: ...

    @property
    def attempt(self) -> int: ...

    @property
    def idempotency_key(self) -> str: ...

    @property
    def item_index(self) -> int | None: ...

    def emit(self, name: str, payload: Mapping[str, Any] | None = None) -> None:
        """Publish the custom event `<node>.<name>`; safe to call from any thread."""
        ...

    def log(self, message: str, *, stream: str = "log") -> None:
        """Append a line to the task's log; safe to call from any thread."""
        ...


@dataclass(frozen=True, slots=True)
class ExecutorEnvironment:
    """What an executor factory (an entry point of `whenflow.executors`) receives.

    Executors take what they need from here instead of reading the process
    environment, so tests and embedding programs can hand them their own.

    Attributes:
        connections: Where `connection: NAME` is looked up (DESIGN.md §13).
        settings: The process's `WHENFLOW_*` variables, secrets and connections
            left out (`WHENFLOW_SQL_MAX_ROWS`...); an executor documents the
            ones it reads and their defaults.
    """

    connections: ConnectionResolver
    settings: Mapping[str, str] = field(default_factory=dict)


class ConnectionTester(Protocol):
    """An executor that can test a connection (`whenflow connections test NAME`).

    Optional: the command picks the first executor whose `connection_schemes`
    holds the URL scheme (the part before any `+driver`).
    """

    connection_schemes: tuple[str, ...]

    async def test_connection(self, connection: Connection) -> str:
        """Reach the endpoint; return one line saying what answered, or raise."""
        ...


class Executor(Protocol):
    """Runs one kind of task (`task.type`)."""

    task_type: str

    def check(self, task: TaskSpec) -> list[str]:
        """Problems with the task's configuration found without running it."""
        ...

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Run one attempt; raise to fail it. Cancellation must stop the work."""
        ...
