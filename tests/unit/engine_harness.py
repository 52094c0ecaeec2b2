"""Runs YAML pipelines on the engine with the in-memory fakes of whenflow.testing."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from whenflow.domain.records import EventAppended, VariableWritten
from whenflow.dsl.load import load_program_text
from whenflow.dsl.program import PipelineProgram
from whenflow.engine.orchestrator import Orchestrator
from whenflow.engine.runtime import ExecutionResult
from whenflow.testing import InlineRunner, InMemoryArtifactStore, InMemoryStateStore

HEADER = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: t, version: 1.0.0}
spec:
"""


def program(
    spec: str, functions: Mapping[str, Callable[..., Any]] | None = None
) -> PipelineProgram:
    """Compile a pipeline whose `spec:` body is given (indented or not)."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return load_program_text(HEADER + body + "\n", InlineRunner(functions or {}), path="t.yaml")


@dataclass
class Run:
    result: ExecutionResult
    store: InMemoryStateStore
    orchestrator: Orchestrator

    @property
    def events(self) -> list[str]:
        return self.store.event_types()

    def payloads(self, event_type: str) -> list[Mapping[str, Any]]:
        return [e.payload for e in self.store.events() if e.event_type == event_type]

    def node_events(self, node: str) -> list[str]:
        return [e for e in self.events if e.startswith(node + ".")]

    def status(self, node: str) -> str:
        return self.result.nodes[node].status.value


def make(
    spec: str,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> tuple[Orchestrator, InMemoryStateStore]:
    store = InMemoryStateStore()
    orch = Orchestrator(
        program(spec, functions),
        store=store,
        runner=InlineRunner(functions or {}),
        artifacts=InMemoryArtifactStore(),
        inputs=inputs or {},
        **options,
    )
    return orch, store


async def run_async(
    spec: str,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> Run:
    orch, store = make(spec, functions, inputs, **options)
    result = await orch.run()
    check_log_invariants(store)
    return Run(result, store, orch)


def run(
    spec: str,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> Run:
    return asyncio.run(run_async(spec, functions, inputs, **options))


def check_log_invariants(store: InMemoryStateStore) -> None:
    """Properties every execution must have, whatever its pipeline."""
    events = store.events()
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq has gaps"
    terminal = [
        e.event_type
        for e in events
        if e.source != "pipeline"
        and e.name in ("completed", "failed", "skipped", "stopped", "cancelled")
    ]
    assert len(terminal) == len(set(terminal)), f"a node ended twice: {terminal}"
    # A node's outputs are written before its completed event becomes visible.
    written: set[str] = set()
    for record in store.records:
        if isinstance(record, VariableWritten):
            written.add(record.variable.scope)
        elif isinstance(record, EventAppended) and record.event.name == "completed":
            source = record.event.source
            outputs_expected = any(
                isinstance(r, VariableWritten) and r.variable.scope == source for r in store.records
            )
            if outputs_expected and source != "pipeline":
                assert source in written, f"{source}.completed before its outputs"
