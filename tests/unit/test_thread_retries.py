"""A timed-out in-process attempt runs on in its thread; its retry never overlaps it.

Issue 17, item 4: a thread cannot be stopped, so the next attempt of the same
node waits for the previous attempt's thread to end, and says so in its log.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from engine_harness import HEADER

from whenflow.domain.records import LogAppended
from whenflow.dsl.load import load_program_text
from whenflow.dsl.program import PipelineProgram
from whenflow.engine.orchestrator import Orchestrator
from whenflow.services.pipelines import default_runner
from whenflow.testing import InMemoryArtifactStore, InMemoryStateStore

TESTS_DIR = Path(__file__).resolve().parents[1]

SPEC = """
  nodes:
    - id: slow
      task: {type: python, callable: "taskfuncs.lingering:block_first"}
      timeout: 200ms
      retry: {maxAttempts: 2, delay: 0s}
"""


def compiled(runner: Any) -> PipelineProgram:
    return load_program_text(HEADER + SPEC, runner, path="t.yaml")


@pytest.fixture
def lingering(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    module = importlib.import_module("taskfuncs.lingering")
    module.marks.clear()
    module.release.clear()
    yield module
    module.release.set()  # never leave a thread blocked behind


async def test_a_retry_waits_for_the_timed_out_attempts_thread(lingering: ModuleType) -> None:
    runner = default_runner()
    store = InMemoryStateStore()
    logged: list[LogAppended] = []

    def on_log(line: LogAppended) -> None:
        logged.append(line)
        # Released only once the second attempt says it waits: without the wait
        # it would have run (and ended) while the first still blocked.
        if "waiting for the thread of attempt 1" in line.message:
            lingering.release.set()

    try:
        orchestrator = Orchestrator(
            compiled(runner),
            store=store,
            runner=runner,
            artifacts=InMemoryArtifactStore(),
            on_log=on_log,
        )
        result = await orchestrator.run()
    finally:
        runner.close()

    assert lingering.marks == ["start 1", "end 1", "start 2", "end 2"]
    assert result.nodes["slow"].status.value == "completed"
    assert result.nodes["slow"].outputs == {"attempt": 2}
    assert [e for e in store.event_types() if e.startswith("slow.")] == [
        "slow.started",
        "slow.retrying",
        "slow.started",
        "slow.completed",
    ]
    waits = [line for line in logged if line.stream == "whenflow"]
    assert [(w.attempt, w.node_id) for w in waits] == [(2, "slow")]
    assert "isolation: process" in waits[0].message


async def test_a_retry_of_an_attempt_whose_thread_ended_does_not_wait(
    lingering: ModuleType,
) -> None:
    runner = default_runner()
    store = InMemoryStateStore()
    logged: list[Any] = []
    lingering.release.set()  # attempt 1 returns at once: nothing times out, nothing lingers
    try:
        orchestrator = Orchestrator(
            compiled(runner), store=store, runner=runner, on_log=logged.append
        )
        result = await orchestrator.run()
    finally:
        runner.close()

    assert result.nodes["slow"].attempts == 1
    assert lingering.marks == ["start 1", "end 1"]
    assert not [line for line in logged if line.stream == "whenflow"]
