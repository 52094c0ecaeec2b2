"""A real 3-node pipeline (noop → shell → noop) run through ExecutionService."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from whenflow.domain.events import Event
from whenflow.dsl.load import load_program_text
from whenflow.engine.runtime import ExecutionResult
from whenflow.services.executions import ExecutionService
from whenflow.services.pipelines import default_runner, resolve_signature
from whenflow.services.settings import Settings

PIPELINE = textwrap.dedent(
    """\
    apiVersion: whenflow/v1
    kind: Pipeline
    metadata: {{name: {name}, version: 1.0.0}}
    spec:
      nodes:
        - id: a
          task: {{type: noop}}
        - id: b
          startWhen: "event:a.completed"
          task: {{type: shell, command: [sh, -c, "exit {code}"]}}
        - id: c
          startWhen: "event:b.completed"
          task: {{type: noop}}
    """
)


async def run_three_nodes(
    folder: Path,
    runs: Sequence[tuple[str, int]],
    listener: Callable[[str], Callable[[Event], None]],
) -> list[ExecutionResult]:
    """Run pipeline `name` whose node b exits `code`, once per (name, code), in a
    SQLite store in `folder`; each run's events go to `listener(name)`."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{folder / 'runs.db'}")
    runner = default_runner()
    results = []
    try:
        async with ExecutionService.open(settings, runner=runner) as service:
            for name, code in runs:
                program = load_program_text(
                    PIPELINE.format(name=name, code=code),
                    runner,
                    resolve_signature=resolve_signature,
                )
                results.append(await service.run(program, {}, on_event=listener(name)))
    finally:
        runner.close()
    return results
