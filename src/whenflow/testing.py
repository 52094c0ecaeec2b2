"""In-memory fakes of every engine port, for unit tests and for users testing pipelines.

InMemoryStateStore    StateStore: records in a list; `flush()` is immediate
InMemoryArtifactStore ArtifactStore: bytes in a dict, files in a temp folder
InlineRunner          TaskRunner: `noop`, and `python` tasks looked up in a dict
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from whenflow.domain.errors import ExecutionNotFound, StoreError, WhenflowError
from whenflow.domain.events import Event
from whenflow.domain.records import (
    AttemptRecorded,
    EventAppended,
    ExecutionCreated,
    ExecutionSnapshot,
    ExecutionUpdated,
    InboxApplied,
    InboxMessage,
    MessageKind,
    NodeUpdated,
    Record,
    VariableWritten,
)
from whenflow.domain.states import ExecutionStatus
from whenflow.domain.task_io import TaskContext, TaskRequest, TaskResult
from whenflow.domain.variables import ArtifactRef, Variable


class InMemoryStateStore:
    """Keeps every appended record; `snapshot()` rebuilds what a database would hold."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.flushes = 0
        self.boundaries: list[int] = []
        self.inbox: list[InboxMessage] = []
        self.inbox_reads = 0
        self.claims: list[str] = []
        self._failure: asyncio.Future[StoreError] | None = None

    def append(self, records: Sequence[Record]) -> None:
        """Like the real store, a unit of records lands whole; `boundaries` marks units."""
        self.records.extend(records)
        self.boundaries.append(len(self.records))

    async def flush(self) -> None:
        self.flushes += 1

    async def claim(self, execution_id: str) -> None:
        """One process, one owner: claiming always succeeds; `claims` records them."""
        self.claims.append(execution_id)

    def failure(self) -> asyncio.Future[StoreError]:
        """Never set: the in-memory store does not fail."""
        if self._failure is None:
            self._failure = asyncio.get_running_loop().create_future()
        return self._failure

    def events(self, execution_id: str | None = None) -> list[Event]:
        return [
            r.event
            for r in self.records
            if isinstance(r, EventAppended)
            and (execution_id is None or r.event.execution_id == execution_id)
        ]

    def event_types(self, execution_id: str | None = None) -> list[str]:
        return [e.event_type for e in self.events(execution_id)]

    async def load_execution(self, execution_id: str) -> ExecutionSnapshot:
        return self.snapshot(execution_id, len(self.records))

    def post_message(
        self,
        execution_id: str,
        kind: MessageKind,
        target: str,
        payload: Mapping[str, Any] | None = None,
        created_at: float = 0.0,
    ) -> int:
        """Put a message in the execution's inbox, as `whenflow approve` would."""
        message_id = len(self.inbox) + 1
        self.inbox.append(
            InboxMessage(message_id, execution_id, kind, target, dict(payload or {}), created_at)
        )
        return message_id

    def applied(self) -> dict[int, str | None]:
        """Consumed message ids and their refusal (None when the message applied)."""
        return {r.message_id: r.refusal for r in self.records if isinstance(r, InboxApplied)}

    async def pending_messages(self, execution_id: str) -> list[InboxMessage]:
        self.inbox_reads += 1
        done = self.applied()
        return [
            m for m in self.inbox if m.execution_id == execution_id and m.message_id not in done
        ]

    def snapshot(self, execution_id: str, upto: int) -> ExecutionSnapshot:
        """The state after the first `upto` records: what a crash at that point leaves."""
        created: ExecutionCreated | None = None
        status = ExecutionStatus.RUNNING
        finished_at: float | None = None
        outputs: Mapping[str, Any] | None = None
        error: str | None = None
        events: list[Event] = []
        variables: dict[tuple[str, str], Variable] = {}
        nodes: dict[str, NodeUpdated] = {}
        attempts: dict[tuple[str, int, int], AttemptRecorded] = {}
        for record in self.records[:upto]:
            if isinstance(record, ExecutionCreated) and record.execution_id == execution_id:
                created = record
            elif getattr(record, "execution_id", None) != execution_id and not isinstance(
                record, EventAppended
            ):
                continue
            elif isinstance(record, ExecutionUpdated):
                status, finished_at, error = record.status, record.finished_at, record.error
                outputs = record.outputs
            elif isinstance(record, EventAppended) and record.event.execution_id == execution_id:
                events.append(record.event)
            elif isinstance(record, VariableWritten):
                variables[(record.variable.scope, record.variable.name)] = record.variable
            elif isinstance(record, NodeUpdated):
                nodes[record.node_id] = record
            elif isinstance(record, AttemptRecorded):
                attempts[(record.node_id, record.item_index, record.attempt)] = record
        if created is None:
            raise ExecutionNotFound(execution_id)
        return ExecutionSnapshot(
            execution_id=execution_id,
            pipeline_name=created.pipeline_name,
            pipeline_version=created.pipeline_version,
            definition_text=created.definition_text,
            definition_path=created.definition_path,
            inputs=created.inputs,
            status=status,
            created_at=created.created_at,
            finished_at=finished_at,
            outputs=outputs,
            error=error,
            events=tuple(events),
            variables=tuple(variables.values()),
            nodes=tuple(nodes.values()),
            attempts=tuple(attempts.values()),
        )


class InMemoryArtifactStore:
    """Values in a dict; files copied into a private temporary folder."""

    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="whenflow-artifacts-"))

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def put_value(self, key: str, value: Any) -> ArtifactRef:
        data = json.dumps(value).encode()
        self._values[key] = data
        return ArtifactRef(
            f"memory://{key}",
            len(data),
            hashlib.sha256(data).hexdigest(),
            "application/json",
            "value",
        )

    def put_file(self, key: str, path: str) -> ArtifactRef:
        target = self._dir / key.replace("/", "__")
        shutil.copyfile(path, target)
        data = target.read_bytes()
        return ArtifactRef(
            str(target),
            len(data),
            hashlib.sha256(data).hexdigest(),
            "application/octet-stream",
            "file",
            Path(path).name,
        )

    def put_dir(self, key: str, path: str) -> ArtifactRef:
        target = self._dir / key.replace("/", "__")
        shutil.copytree(path, target)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        return ArtifactRef(
            str(target), size, "0" * 64, "inode/directory", "directory", Path(path).name
        )

    def load_value(self, ref: ArtifactRef) -> Any:
        return json.loads(self._values[ref.uri.removeprefix("memory://")])

    def local_path(self, ref: ArtifactRef) -> str:
        return ref.uri

    def verify(self, ref: ArtifactRef) -> None:
        if ref.kind == "file":
            actual = hashlib.sha256(Path(ref.uri).read_bytes()).hexdigest()
            if actual != ref.sha256:
                raise WhenflowError(f"artifact {ref.uri} was modified after it was stored")


TaskFunction = Callable[..., Any]


class InlineRunner:
    """Runs `noop` tasks and `python` tasks whose `callable` is a key of `functions`.

    Sync functions run on the loop (tests want determinism, not threads);
    a function that declares `ctx` receives the TaskContext.
    """

    def __init__(self, functions: Mapping[str, TaskFunction] | None = None) -> None:
        self.functions = dict(functions or {})
        self.calls: list[TaskRequest] = []

    def knows(self, task_type: str) -> bool:
        return task_type in ("noop", "python")

    def check(self, request_task: Any) -> list[str]:
        if request_task.type == "python":
            name = request_task.config.get("callable")
            if name not in self.functions:
                return [f"callable {name!r} is not registered with the InlineRunner"]
        return []

    async def run(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        self.calls.append(request)
        if request.task.type == "noop":
            return TaskResult(dict(request.inputs))
        fn = self.functions[request.task.config["callable"]]
        kwargs = dict(request.inputs)
        if "ctx" in inspect.signature(fn).parameters:
            kwargs["ctx"] = ctx
        value = fn(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        await asyncio.sleep(0)
        return TaskResult(dict(value or {}))
