"""How a `pipeline` task reaches the dispatcher of its child execution.

The rules in `subpipelines` need a second dispatcher but must not import the
orchestrator that runs them (imports in `engine/` point one way: the
orchestrator at the top, the rules below it, the state below them). The
orchestrator hands each `ExecutionState` a `ChildFactory` instead; a child is
used through the `ChildExecution` protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from whenflow.domain.records import ExecutionSnapshot
    from whenflow.dsl.program import PipelineProgram
    from whenflow.engine.runtime import ExecutionResult  # a dataclass, below this protocol


class ChildExecution(Protocol):
    """One child execution's dispatcher, as `subpipelines` drives it."""

    @property
    def execution_id(self) -> str: ...

    @property
    def started(self) -> bool:
        """Whether its loop runs (it was started or resumed)."""
        ...

    async def start(self) -> None: ...

    async def ended(self) -> None: ...

    async def resume(
        self, snapshot: ExecutionSnapshot, *, cancel: str | None = None
    ) -> ExecutionResult: ...

    async def halt(self) -> None: ...

    def cancel(self, reason: str) -> None: ...

    async def wait(self) -> ExecutionResult: ...


class ChildFactory(Protocol):
    """Builds the dispatcher of a child execution of the calling execution."""

    def __call__(
        self,
        program: PipelineProgram,
        *,
        inputs: Mapping[str, Any],
        execution_id: str | None,
    ) -> ChildExecution: ...
