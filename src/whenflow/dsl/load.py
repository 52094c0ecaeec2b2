"""Parse + validate in one call: a pipeline file to a `PipelineProgram`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from whenflow.domain.errors import SourceLocation
from whenflow.dsl.parse import ParsedPipeline, parse_pipeline_file, parse_pipeline_text
from whenflow.dsl.program import PipelineProgram, SignatureResolver, TaskChecker, build_program


class ParsedLocator:
    """Points validation issues at `file:line:col`, inside expressions where possible."""

    def __init__(self, parsed: ParsedPipeline) -> None:
        self._parsed = parsed

    def _path(self, node_id: str | None, fields: tuple[str | int, ...]) -> tuple[str | int, ...]:
        if node_id is None or node_id not in self._parsed.node_index:
            return ("spec", *fields)
        return self._parsed.node_path(node_id, *fields)

    def locate(self, node_id: str | None, *fields: str | int) -> SourceLocation | None:
        return self._parsed.source_map.locate(self._path(node_id, fields))

    def locate_in(
        self, node_id: str | None, *fields: str | int, offset: int
    ) -> SourceLocation | None:
        return self._parsed.source_map.locate_in_value(self._path(node_id, fields), offset)


def program_from_parsed(
    parsed: ParsedPipeline, checker: TaskChecker, resolve_signature: SignatureResolver | None = None
) -> PipelineProgram:
    return build_program(parsed.definition, ParsedLocator(parsed), checker, resolve_signature)


def load_program_file(
    path: str | Path,
    checker: TaskChecker,
    *,
    task_paths: Sequence[str | Path] = (),
    resolve_signature: SignatureResolver | None = None,
) -> PipelineProgram:
    """Parse and validate a pipeline file; raise DefinitionErrors with every problem."""
    parsed = parse_pipeline_file(path, task_paths=task_paths)
    return program_from_parsed(parsed, checker, resolve_signature)


def load_program_text(
    text: str,
    checker: TaskChecker,
    *,
    path: str = "<string>",
    base_dir: Path | None = None,
    task_paths: Sequence[str | Path] = (),
    resolve_signature: SignatureResolver | None = None,
) -> PipelineProgram:
    parsed = parse_pipeline_text(text, path, task_paths=task_paths, base_dir=base_dir)
    return program_from_parsed(parsed, checker, resolve_signature)
