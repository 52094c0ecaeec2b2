"""`pipeline` tasks: a node runs a child execution of another pipeline (DESIGN.md §5).

Each test asserts the event sequences of the parent and of the child, which
are separate executions in one store.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from whenflow.domain.errors import DefinitionErrors
from whenflow.domain.records import EventAppended, ExecutionCreated, MessageKind
from whenflow.dsl.load import load_program_file
from whenflow.engine.orchestrator import Orchestrator
from whenflow.testing import InlineRunner, InMemoryArtifactStore, InMemoryStateStore

CHILD = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: child, version: 1.0.0}
spec:
  inputs:
    n: {type: integer, required: true}
  nodes:
    - {id: double, task: {type: python, callable: double}, inputBindings: {n: "{{ pipeline.input.n }}"}}
  outputs:
    doubled: "{{ double.value }}"
"""

PARENT = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: parent, version: 1.0.0}
spec:
  nodes:
    - id: call
      task: {type: pipeline, pipeline: ./child.yaml}
      inputBindings: {n: 21}
      %(extra)s
    - {id: after, task: {type: noop}, inputBindings: {got: "{{ call.doubled }}"}}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def double(n: int) -> dict[str, Any]:
    return {"value": n * 2}


async def run_parent(
    folder: Path, functions: Mapping[str, Callable[..., Any]], extra: str = ""
) -> tuple[Orchestrator, InMemoryStateStore]:
    write(folder, "child.yaml", CHILD)
    parent = write(folder, "parent.yaml", PARENT % {"extra": extra})
    runner = InlineRunner(functions)
    store = InMemoryStateStore()
    orch = Orchestrator(
        load_program_file(parent, runner),
        store=store,
        runner=runner,
        artifacts=InMemoryArtifactStore(),
    )
    await orch.run()
    return orch, store


def children(store: InMemoryStateStore, parent_id: str) -> list[str]:
    return [
        r.execution_id
        for r in store.records
        if isinstance(r, ExecutionCreated) and r.parent_execution_id == parent_id
    ]


async def test_the_childs_outputs_become_the_nodes_outputs(tmp_path: Path) -> None:
    orch, store = await run_parent(tmp_path, {"double": double})

    result = orch.result()
    assert result.status.value == "completed"
    assert result.nodes["call"].outputs == {"doubled": 42}
    assert result.nodes["after"].outputs == {"got": 42}
    assert store.event_types(orch.execution_id) == [
        "pipeline.started",
        "call.started",
        "call.child_started",
        "call.completed",
        "after.started",
        "after.completed",
        "pipeline.completed",
    ]
    (child_id,) = children(store, orch.execution_id)
    assert store.event_types(child_id) == [
        "pipeline.started",
        "double.started",
        "double.completed",
        "pipeline.completed",
    ]
    started = [e for e in store.events(orch.execution_id) if e.event_type == "call.child_started"]
    assert started[0].payload["execution_id"] == child_id


async def test_a_failed_child_fails_the_attempt_and_a_retry_runs_a_new_child(
    tmp_path: Path,
) -> None:
    calls: list[int] = []

    def flaky_double(n: int) -> dict[str, Any]:
        calls.append(n)
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        return {"value": n * 2}

    orch, store = await run_parent(
        tmp_path, {"double": flaky_double}, extra="retry: {maxAttempts: 2, delay: 0s}"
    )

    assert orch.result().nodes["call"].outputs == {"doubled": 42}
    assert [e for e in store.event_types(orch.execution_id) if e.startswith("call.")] == [
        "call.started",
        "call.child_started",
        "call.retrying",
        "call.started",
        "call.child_started",
        "call.completed",
    ]
    first, second = children(store, orch.execution_id)
    assert store.event_types(first)[-2:] == ["double.failed", "pipeline.failed"]
    assert store.event_types(second)[-1] == "pipeline.completed"
    retrying = [e for e in store.events(orch.execution_id) if e.event_type == "call.retrying"]
    assert retrying[0].payload["error_type"] == "SubPipelineFailed"
    assert first in retrying[0].payload["message"]


async def test_cancelling_the_parent_cancels_the_running_child(tmp_path: Path) -> None:
    running = asyncio.Event()

    async def forever(n: int) -> dict[str, Any]:
        running.set()
        await asyncio.Event().wait()
        return {}

    write(tmp_path, "child.yaml", CHILD)
    parent = write(tmp_path, "parent.yaml", PARENT % {"extra": ""})
    runner = InlineRunner({"double": forever})
    store = InMemoryStateStore()
    orch = Orchestrator(load_program_file(parent, runner), store=store, runner=runner)
    await orch.start()
    await running.wait()
    orch.cancel("operator said stop")
    result = await orch.wait()

    assert result.status.value == "cancelled"
    assert store.event_types(orch.execution_id)[-3:] == [
        "call.cancelled",
        "after.cancelled",
        "pipeline.cancelled",
    ]
    (child_id,) = children(store, orch.execution_id)
    # The child ended before the parent's wait() returned.
    assert store.event_types(child_id)[-2:] == ["double.cancelled", "pipeline.cancelled"]


def test_bindings_are_checked_against_the_childs_inputs(tmp_path: Path) -> None:
    write(tmp_path, "child.yaml", CHILD)
    parent = write(tmp_path, "parent.yaml", (PARENT % {"extra": ""}).replace("{n: 21}", "{m: 21}"))

    with pytest.raises(DefinitionErrors) as raised:
        load_program_file(parent, InlineRunner({"double": double}))

    messages = [str(issue) for issue in raised.value.issues]
    assert any("the task declares no input 'm' (declared: n)" in m for m in messages)
    assert any("required input 'n'" in m for m in messages)
    assert all(m.startswith(f"{parent}:") for m in messages)


def test_pipelines_that_name_each_other_are_rejected(tmp_path: Path) -> None:
    write(
        tmp_path,
        "child.yaml",
        CHILD.replace(
            "{type: python, callable: double}", "{type: pipeline, pipeline: ./parent.yaml}"
        ),
    )
    parent = write(tmp_path, "parent.yaml", PARENT % {"extra": ""})

    with pytest.raises(DefinitionErrors) as raised:
        load_program_file(parent, InlineRunner({"double": double}))

    assert "cycle: parent.yaml -> child.yaml -> parent.yaml" in str(raised.value)


def test_a_missing_child_file_is_reported_at_the_field(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent.yaml", PARENT % {"extra": ""})

    with pytest.raises(DefinitionErrors) as raised:
        load_program_file(parent, InlineRunner({"double": double}))

    (issue,) = raised.value.issues
    assert issue.location is not None
    assert issue.location.line == 7
    assert "no pipeline file at" in issue.message


class WatchedStore(InMemoryStateStore):
    """An in-memory store that resolves a future when an event type is appended."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[str, asyncio.Future[None]] = {}

    def watch(self, event_type: str) -> asyncio.Future[None]:
        self.watched[event_type] = asyncio.get_running_loop().create_future()
        return self.watched[event_type]

    def append(self, records: Any) -> None:
        super().append(records)
        for record in records:
            if isinstance(record, EventAppended):
                future = self.watched.get(record.event.event_type)
                if future is not None and not future.done():
                    future.set_result(None)


GATED_CHILD = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: child, version: 1.0.0}
spec:
  inputs:
    n: {type: integer, required: true}
  nodes:
    - {id: gate, task: {type: approval}}
    - id: double
      startWhen: event:gate.approved
      task: {type: python, callable: double}
      inputBindings: {n: "{{ pipeline.input.n }}"}
  outputs:
    doubled: "{{ double.value }}"
"""


async def gated_parent(folder: Path, **options: Any) -> tuple[Orchestrator, WatchedStore, Path]:
    """A parent whose child waits at its approval `gate`; returns it with its store and file."""
    write(folder, "child.yaml", GATED_CHILD)
    parent = write(folder, "parent.yaml", PARENT % {"extra": ""})
    runner = InlineRunner({"double": double})
    store = WatchedStore()
    orch = Orchestrator(load_program_file(parent, runner), store=store, runner=runner, **options)
    waiting = store.watch("gate.waiting")
    await orch.start()
    await waiting
    return orch, store, parent


def resumed_parent(parent: Path, runner: InlineRunner, store: InMemoryStateStore, eid: str) -> Any:
    return Orchestrator(
        load_program_file(parent, runner),
        store=store,
        runner=runner,
        artifacts=InMemoryArtifactStore(),
        execution_id=eid,
    )


async def test_a_resumed_parent_adopts_its_unfinished_child_instead_of_starting_another(
    tmp_path: Path,
) -> None:
    orch, store, parent = await gated_parent(tmp_path)
    cut = len(store.records)  # the process dies here, the child waiting for its approval
    orch.cancel("ends this loop's copy; the resume starts from the cut")
    await orch.wait()

    again = WatchedStore()
    again.records = store.records[:cut]
    (child_id,) = children(again, orch.execution_id)
    child_resumed = again.watch("pipeline.resumed")
    fresh = InlineRunner({"double": double})
    parent_again = resumed_parent(parent, fresh, again, orch.execution_id)
    snapshot = await again.load_execution(orch.execution_id)
    finished = asyncio.create_task(parent_again.resume(snapshot))
    await child_resumed
    again.post_message(child_id, MessageKind.APPROVE, "gate", {"by": "alice"})
    result = await finished

    assert result.status.value == "completed"
    assert result.nodes["after"].outputs == {"got": 42}
    assert children(again, orch.execution_id) == [child_id]
    assert [
        e for e in again.event_types(orch.execution_id) if e.startswith(("call.", "pipeline."))
    ] == [
        "pipeline.started",
        "call.started",
        "call.child_started",
        "pipeline.resumed",
        "call.started",
        "call.child_resumed",
        "call.completed",
        "pipeline.completed",
    ]
    assert again.event_types(child_id) == [
        "pipeline.started",
        "gate.waiting",
        "pipeline.resumed",
        "gate.approved",
        "gate.completed",
        "double.started",
        "double.completed",
        "pipeline.completed",
    ]


async def test_a_child_that_finished_before_the_crash_gives_its_stored_result(
    tmp_path: Path,
) -> None:
    orch, store = await run_parent(tmp_path, {"double": double})
    (child_id,) = children(store, orch.execution_id)
    child_done = next(
        i
        for i, r in enumerate(store.records)
        if isinstance(r, EventAppended)
        and r.event.execution_id == child_id
        and r.event.event_type == "pipeline.completed"
    )
    cut = min(b for b in store.boundaries if b > child_done)
    assert "call.completed" not in [
        r.event.event_type for r in store.records[:cut] if isinstance(r, EventAppended)
    ]

    again = InMemoryStateStore()
    again.records = store.records[:cut]
    fresh = InlineRunner({"double": double})
    parent = tmp_path / "parent.yaml"
    result = await resumed_parent(parent, fresh, again, orch.execution_id).resume(
        await again.load_execution(orch.execution_id)
    )

    assert [c.node_id for c in fresh.calls] == ["after"]  # the child's work is not redone
    assert result.nodes["call"].outputs == {"doubled": 42}
    assert again.event_types(orch.execution_id)[-6:] == [
        "call.started",
        "call.child_resumed",
        "call.completed",
        "after.started",
        "after.completed",
        "pipeline.completed",
    ]
    assert children(again, orch.execution_id) == [child_id]


async def test_a_child_without_approvals_or_external_events_reads_no_inbox(
    tmp_path: Path,
) -> None:
    write(tmp_path, "child.yaml", CHILD)
    parent = write(tmp_path, "parent.yaml", PARENT % {"extra": ""})
    runner = InlineRunner({"double": double})
    store = InMemoryStateStore()
    orch = Orchestrator(
        load_program_file(parent, runner), store=store, runner=runner, inbox_poll_s=None
    )
    result = await orch.run()
    assert result.status.value == "completed"
    assert store.inbox_reads == 0  # the parent reads none, and the child needs none


async def test_a_child_with_an_approval_reads_its_own_inbox(tmp_path: Path) -> None:
    orch, store, _ = await gated_parent(tmp_path, inbox_poll_s=None)
    (child_id,) = children(store, orch.execution_id)
    store.post_message(child_id, MessageKind.APPROVE, "gate", {"by": "alice"})
    result = await orch.wait()
    assert result.nodes["call"].outputs == {"doubled": 42}


async def test_a_second_crash_right_after_the_adoption_still_finds_the_child(
    tmp_path: Path,
) -> None:
    orch, store, parent = await gated_parent(tmp_path)
    first_cut = len(store.records)
    orch.cancel("ends this loop's copy")
    await orch.wait()
    (child_id,) = children(store, orch.execution_id)

    # First resume: the crash comes in the unit that announced the adoption.
    second = WatchedStore()
    second.records = store.records[:first_cut]
    announced = second.watch("call.child_resumed")
    resumed = resumed_parent(parent, InlineRunner({"double": double}), second, orch.execution_id)
    running = asyncio.create_task(resumed.resume(await second.load_execution(orch.execution_id)))
    await announced
    # The crash point: the end of the unit that started the new attempt.
    at = [
        i
        for i, r in enumerate(second.records)
        if isinstance(r, EventAppended) and r.event.event_type == "call.started"
    ][-1]
    second_cut = min(b for b in second.boundaries if b > at)
    resumed.cancel("ends this loop's copy too")
    await running

    third = InMemoryStateStore()
    third.records = second.records[:second_cut]
    third.post_message(child_id, MessageKind.APPROVE, "gate", {"by": "alice"})
    final = resumed_parent(parent, InlineRunner({"double": double}), third, orch.execution_id)
    result = await final.resume(await third.load_execution(orch.execution_id))

    assert result.nodes["call"].outputs == {"doubled": 42}
    assert children(third, orch.execution_id) == [child_id]


async def test_a_cancel_posted_while_the_parent_was_dead_cancels_the_child_it_would_adopt(
    tmp_path: Path,
) -> None:
    """Issue 13 item 10 for sub-pipelines: the cancel applies first, nothing is relaunched,
    and the child the lost attempt started does not stay `running` forever."""
    orch, store, parent = await gated_parent(tmp_path)
    cut = len(store.records)
    orch.cancel("ends this loop's copy; the resume starts from the cut")
    await orch.wait()

    again = WatchedStore()
    again.records = store.records[:cut]
    (child_id,) = children(again, orch.execution_id)
    again.post_message(orch.execution_id, MessageKind.CANCEL, "", {"reason": "stop it"})
    fresh = InlineRunner({"double": double})
    parent_again = resumed_parent(parent, fresh, again, orch.execution_id)
    result = await parent_again.resume(await again.load_execution(orch.execution_id))

    assert result.status.value == "cancelled"
    assert [e for e in again.event_types(orch.execution_id) if e.startswith("call.")] == [
        "call.started",
        "call.child_started",
        "call.cancelled",
    ]
    assert again.event_types(child_id) == [
        "pipeline.started",
        "gate.waiting",
        "pipeline.resumed",
        "gate.cancelled",
        "double.cancelled",
        "pipeline.cancelled",
    ]
    assert fresh.calls == []
    assert (await again.load_execution(child_id)).status.value == "cancelled"
