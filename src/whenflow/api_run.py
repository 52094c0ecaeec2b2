"""`whenflow.run()`: run a pipeline from Python, with the embedded store."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from whenflow.domain.definitions import PipelineDefinition
from whenflow.domain.errors import SourceLocation
from whenflow.dsl.emit import to_yaml
from whenflow.dsl.program import PipelineProgram, build_program


class _NoLocations:
    """Definitions built in Python have no file positions to report."""

    def locate(self, node_id: str | None, *fields: str | int) -> SourceLocation | None:
        return None

    def locate_in(
        self, node_id: str | None, *fields: str | int, offset: int
    ) -> SourceLocation | None:
        return None


def compile_definition(definition: PipelineDefinition) -> PipelineProgram:
    """Validate and compile a definition built in Python; raises DefinitionErrors.

    A definition without source text gets one (`whenflow.dsl.emit`): it is
    stored with the execution, so that `whenflow resume` can compile it again.
    """
    from whenflow.dsl.load import load_program_text
    from whenflow.services.pipelines import default_runner, resolve_signature

    if definition.source_text is not None:
        return build_program(definition, _NoLocations(), default_runner(), resolve_signature)
    # Validate the text itself, as `resume` will read it: what runs can be resumed.
    return load_program_text(
        to_yaml(definition),
        default_runner(),
        path="<python definition>",
        resolve_signature=resolve_signature,
    )


def run(
    pipeline: str | Path | PipelineDefinition | PipelineProgram,
    inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a pipeline to its end and return what `whenflow run --json` prints.

    `pipeline` is a YAML file path, a PipelineDefinition built in Python, or a
    compiled PipelineProgram. State goes to `$WHENFLOW_HOME` (or
    `$WHENFLOW_DATABASE_URL`). Raises DefinitionErrors or InputError for bad input.
    """
    from whenflow.services.executions import ExecutionService
    from whenflow.services.pipelines import load_program

    if isinstance(pipeline, str | Path):
        program = load_program(pipeline)
    elif isinstance(pipeline, PipelineDefinition):
        program = compile_definition(pipeline)
    else:
        program = pipeline

    async def go() -> dict[str, Any]:
        async with ExecutionService.open() as service:
            result = await service.run(program, dict(inputs or {}))
            return result.to_json()

    return asyncio.run(go())
