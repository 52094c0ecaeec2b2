"""Parse + validate in one call: a pipeline file to a `PipelineProgram`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from whenflow.domain.definitions import TaskDefinition
from whenflow.domain.errors import DefinitionErrors, DefinitionIssue, SourceLocation
from whenflow.dsl.parse import ParsedPipeline, parse_pipeline_file, parse_pipeline_text
from whenflow.dsl.program import (
    ChildLoader,
    PipelineProgram,
    SignatureResolver,
    TaskChecker,
    build_program,
)


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


class _ChildLoader:
    """Compiles the pipelines `pipeline` tasks name, relative to the file that names them.

    Each file is compiled once per load; a pipeline that (through others) names
    itself is an error, since its executions would nest without end.
    """

    def __init__(
        self,
        checker: TaskChecker,
        task_paths: Sequence[str | Path],
        resolve_signature: SignatureResolver | None,
        root: Path | None,
    ) -> None:
        self._checker = checker
        self._task_paths = task_paths
        self._resolve_signature = resolve_signature
        self._compiled: dict[Path, PipelineProgram] = {}
        self._stack: list[Path] = [root] if root is not None else []
        """The files being compiled, outermost first: naming one of them is a cycle."""

    def for_file(self, base_dir: Path | None) -> ChildLoader:
        def load(target: str) -> PipelineProgram:
            path = ((base_dir or Path.cwd()) / target).resolve()
            if path in self._compiled:
                return self._compiled[path]
            if path in self._stack:
                chain = " -> ".join(p.name for p in [*self._stack, path])
                raise DefinitionErrors(
                    [DefinitionIssue(f"sub-pipelines name each other in a cycle: {chain}")]
                )
            if not path.is_file():
                raise DefinitionErrors([DefinitionIssue(f"no pipeline file at {path}")])
            self._stack.append(path)
            try:
                parsed = parse_pipeline_file(path, task_paths=self._task_paths, keep_going=True)
                program = build_program(
                    parsed.definition,
                    ParsedLocator(parsed),
                    self._checker,
                    self._resolve_signature,
                    self.for_file(path.parent),
                    prior_issues=parsed.issues,
                    unchecked=parsed.unchecked,
                )
            finally:
                self._stack.pop()
            self._compiled[path] = program
            return program

        return load


def program_from_parsed(
    parsed: ParsedPipeline,
    checker: TaskChecker,
    resolve_signature: SignatureResolver | None = None,
    *,
    base_dir: Path | None = None,
    own_path: Path | None = None,
    task_paths: Sequence[str | Path] = (),
) -> PipelineProgram:
    children = _ChildLoader(checker, task_paths, resolve_signature, own_path)
    return build_program(
        parsed.definition,
        ParsedLocator(parsed),
        checker,
        resolve_signature,
        children.for_file(base_dir),
        prior_issues=parsed.issues,
        unchecked=parsed.unchecked,
    )


def load_program_file(
    path: str | Path,
    checker: TaskChecker,
    *,
    task_paths: Sequence[str | Path] = (),
    resolve_signature: SignatureResolver | None = None,
) -> PipelineProgram:
    """Parse and validate a pipeline file; raise DefinitionErrors with every problem."""
    parsed = parse_pipeline_file(path, task_paths=task_paths, keep_going=True)
    own = Path(path).resolve()
    return program_from_parsed(
        parsed,
        checker,
        resolve_signature,
        base_dir=own.parent,
        own_path=own,
        task_paths=task_paths,
    )


def load_program_text(
    text: str,
    checker: TaskChecker,
    *,
    path: str = "<string>",
    base_dir: Path | None = None,
    task_paths: Sequence[str | Path] = (),
    resolve_signature: SignatureResolver | None = None,
    known_tasks: Mapping[str, TaskDefinition] | None = None,
) -> PipelineProgram:
    """Parse and validate a pipeline given as text; see `parse_pipeline_text`."""
    parsed = parse_pipeline_text(
        text,
        path,
        task_paths=task_paths,
        base_dir=base_dir,
        keep_going=True,
        known_tasks=known_tasks,
    )
    own = (base_dir / Path(path).name).resolve() if base_dir is not None else None
    return program_from_parsed(
        parsed,
        checker,
        resolve_signature,
        base_dir=base_dir,
        own_path=own,
        task_paths=task_paths,
    )
