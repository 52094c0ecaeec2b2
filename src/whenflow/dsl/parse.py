"""Entry points: a pipeline file (or text) → a `ParsedPipeline`, with its task definitions.

A pipeline's `task: {ref: name@version}` blocks are resolved against the
TaskDefinitions found, in this order, in:

1. the other documents (`---`) of the same file with `kind: Task`;
2. the `*.yaml` / `*.yml` files next to the pipeline file and in its `tasks/`
   folder whose first document is `kind: Task` (other files are ignored;
   a file that looks like a Task file but does not parse is an error located
   in that file);
3. `task_paths`: files (each must hold at least one Task) or directories
   (searched recursively, like 2).

The same `name@version` found twice with different content is an error;
found twice with the same content (one file seen by two routes) is fine.
Every problem found is reported together in one `DefinitionErrors`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from whenflow.domain.definitions import NODE_ID_PATTERN, PipelineDefinition, TaskDefinition
from whenflow.domain.errors import (
    DefinitionError,
    DefinitionErrors,
    DefinitionIssue,
    SourceLocation,
)
from whenflow.dsl.convert import (
    PLACEHOLDER_TASK,
    document_from_data,
    partial_pipeline,
    task_from_document,
)
from whenflow.dsl.schema import NodeModel, PipelineDocument, TaskDocument
from whenflow.dsl.yaml_source import SourceMap, YamlPath, field_name, load_yaml_documents

YAML_SUFFIXES = (".yaml", ".yml")
# Recognises a Task file that does not parse, so its syntax error is not silently ignored.
_TASK_KIND_LINE = re.compile(r"""^kind:\s*["']?Task["']?\s*(#.*)?$""", re.MULTILINE)


@dataclass(frozen=True)
class ParsedPipeline:
    """A loaded pipeline and what is needed to point back into its file."""

    definition: PipelineDefinition
    source_map: SourceMap
    node_index: Mapping[str, int]  # node id → its index in spec.nodes
    issues: tuple[DefinitionIssue, ...] = ()
    """Problems found while parsing with `keep_going` (empty otherwise)."""
    unchecked: frozenset[str] = frozenset()
    """Nodes standing in for ones that could not be read; their problems are in `issues`."""

    def node_path(self, node_id: str, *fields: str | int) -> YamlPath:
        """The YAML path of a node (or one of its fields): ("spec", "nodes", i, *fields)."""
        return ("spec", "nodes", self.node_index[node_id], *fields)

    def locate_node(self, node_id: str, *fields: str | int) -> SourceLocation:
        """Where a node's field stands in the file (its nearest ancestor if unset)."""
        return self.source_map.locate(self.node_path(node_id, *fields))

    def field_name(self, path: YamlPath) -> str:
        """The dotted field name of a path, as every DefinitionIssue writes it."""
        return field_name(path, self.definition.node_ids)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = f"no such file: {path}"
    except IsADirectoryError:
        message = f"{path} is a directory, not a definition file"
    except UnicodeDecodeError as exc:
        message = f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}"
    raise DefinitionError(DefinitionIssue(message))


def _kind(data: Any) -> object:
    return data.get("kind") if isinstance(data, dict) else None


class _TaskCollector:
    """Accumulates TaskDefinitions and the issues met while loading them."""

    def __init__(self, skip: Path | None = None) -> None:
        self.tasks: dict[str, TaskDefinition] = {}
        self.issues: list[DefinitionIssue] = []
        self._where: dict[str, SourceLocation] = {}
        self._seen: set[Path] = {skip.resolve()} if skip else set()

    def add_documents(self, documents: Sequence[tuple[Any, SourceMap]]) -> int:
        """Add every `kind: Task` document; return how many there were."""
        count = 0
        for data, source in documents:
            if _kind(data) != "Task":
                continue
            count += 1
            try:
                document = document_from_data(data, source)
            except DefinitionError as exc:
                self.issues.extend(exc.issues)
                continue
            if isinstance(document, TaskDocument):
                self._add(task_from_document(document), source)
        return count

    def _add(self, definition: TaskDefinition, source: SourceMap) -> None:
        where = source.locate(("metadata", "name"))
        known = self.tasks.get(definition.ref)
        if known is None:
            self.tasks[definition.ref] = definition
            self._where[definition.ref] = where
        elif known != definition:
            self.issues.append(
                DefinitionIssue(
                    f"task {definition.ref} is defined twice with different content "
                    f"(first at {self._where[definition.ref]}); give one a new version",
                    where,
                    "metadata.version",
                )
            )

    def add_path(self, path: Path, *, explicit: bool) -> None:
        if path.is_dir():
            self.add_directory(path, recursive=explicit)
        elif explicit or path.exists():
            self.add_file(path, explicit=explicit)

    def add_directory(self, directory: Path, *, recursive: bool) -> None:
        pattern = "**/*" if recursive else "*"
        for candidate in sorted(directory.glob(pattern)):
            if candidate.suffix in YAML_SUFFIXES and candidate.is_file():
                self.add_file(candidate, explicit=False)

    def add_file(self, path: Path, *, explicit: bool) -> None:
        resolved = path.resolve()
        if resolved in self._seen:
            return
        self._seen.add(resolved)
        try:
            text = _read(path)
        except DefinitionError as exc:
            if explicit:
                self.issues.extend(exc.issues)
            return
        if not explicit and not _TASK_KIND_LINE.search(text):
            return  # not a Task file: don't parse a neighbour (maybe a big pipeline) for nothing
        try:
            documents = load_yaml_documents(text, str(path))
        except DefinitionError as exc:
            if explicit or _TASK_KIND_LINE.search(text):
                self.issues.extend(exc.issues)
            return
        if not explicit and (not documents or _kind(documents[0][0]) != "Task"):
            return
        if self.add_documents(documents) == 0:
            self.issues.append(
                DefinitionIssue(
                    "no `kind: Task` document in this file", SourceLocation(str(path), 1, 1)
                )
            )


def load_task_definitions(paths: Sequence[str | Path]) -> dict[str, TaskDefinition]:
    """TaskDefinitions from files and directories, keyed by `name@version`.

    Raises:
        DefinitionErrors: every problem found in those files, located.
    """
    collector = _TaskCollector()
    for path in paths:
        collector.add_path(Path(path), explicit=True)
    if collector.issues:
        raise DefinitionErrors(collector.issues)
    return collector.tasks


def _the_pipeline(
    documents: Sequence[tuple[Any, SourceMap]], path: str, issues: list[DefinitionIssue]
) -> tuple[Any, SourceMap] | None:
    """The file's one Pipeline document; records an issue and returns None otherwise."""
    pipelines = [(data, source) for data, source in documents if _kind(data) == "Pipeline"]
    for data, source in documents:
        # An empty document (a trailing `---`) is not an error.
        if data is not None and _kind(data) not in ("Pipeline", "Task"):
            try:
                document_from_data(data, source)
            except DefinitionError as exc:
                issues.extend(exc.issues)
    if len(pipelines) > 1:
        first = pipelines[0][1].locate(("kind",))
        for _, source in pipelines[1:]:
            issues.append(
                DefinitionIssue(
                    f"a file holds exactly one Pipeline; another starts at line {first.line}",
                    source.locate(("kind",)),
                    "kind",
                )
            )
        return None
    if not pipelines:
        if not issues:
            location = documents[0][1].locate(("kind",)) if documents else None
            issues.append(
                DefinitionIssue(
                    "no `kind: Pipeline` document in this file",
                    location or SourceLocation(path, 1, 1),
                    "kind",
                )
            )
        return None
    return pipelines[0]


def parse_pipeline_text(
    text: str,
    path: str = "<string>",
    *,
    task_paths: Sequence[str | Path] = (),
    base_dir: Path | None = None,
    keep_going: bool = False,
    known_tasks: Mapping[str, TaskDefinition] | None = None,
) -> ParsedPipeline:
    """Parse a pipeline given as text; `base_dir` (if any) is searched for Task files.

    With `keep_going`, problems that leave the rest readable (a node that does
    not match the schema, an unknown task ref, a broken Task file) are kept in
    `ParsedPipeline.issues` instead of raised, so validation can report them
    with its own in one list.

    `known_tasks` (keyed by `name@version`, e.g. the registry's published
    tasks) resolve `task: {ref}` too; a Task in the text or its folders wins.

    Raises:
        DefinitionError / DefinitionErrors: located problems, all of them at once.
    """
    documents = load_yaml_documents(text, path)
    collector = _TaskCollector(skip=Path(path) if base_dir is not None else None)
    collector.tasks.update(known_tasks or {})
    collector.add_documents(documents)
    if base_dir is not None:
        collector.add_directory(base_dir, recursive=False)
        if (base_dir / "tasks").is_dir():
            collector.add_directory(base_dir / "tasks", recursive=False)
    for task_path in task_paths:
        collector.add_path(Path(task_path), explicit=True)
    issues = list(collector.issues)
    found = _the_pipeline(documents, path, issues)
    document: PipelineDocument | None = None
    placeholders: frozenset[str] = frozenset()
    if found is not None:
        try:
            parsed = document_from_data(*found)
        except DefinitionError as exc:
            issues.extend(exc.issues)
            salvaged = _salvage(found[0]) if keep_going else None
            if salvaged is not None:
                document, placeholders = salvaged
        else:
            document = parsed if isinstance(parsed, PipelineDocument) else None
    if found is None or document is None or (issues and not keep_going):
        raise DefinitionErrors(issues)
    source = found[1]
    partial = partial_pipeline(
        document,
        source,
        collector.tasks,
        source_path=path,
        source_text=text,
        unchecked=placeholders,
    )
    issues.extend(partial.issues)
    if issues and not keep_going:
        raise DefinitionErrors(issues)
    node_index: dict[str, int] = {}
    for index, node in enumerate(document.spec.nodes):
        node_index.setdefault(node.id, index)  # a repeated id is reported at the later one
    return ParsedPipeline(partial.definition, source, node_index, tuple(issues), partial.unchecked)


def _salvage(data: Any) -> tuple[PipelineDocument, frozenset[str]] | None:
    """The document with each node that fails the schema replaced by a placeholder.

    Placeholders keep the node's place (so locations stay right) and its id
    when the id is valid (so references to it are not reported as unknown).
    None when the document still fails: its problem is not inside a node.
    """
    spec = data.get("spec") if isinstance(data, dict) else None
    nodes = spec.get("nodes") if isinstance(spec, dict) else None
    if not isinstance(data, dict) or not isinstance(spec, dict) or not isinstance(nodes, list):
        return None
    placeholders: set[str] = set()
    repaired: list[Any] = []
    for index, node in enumerate(nodes):
        try:
            NodeModel.model_validate(node)
        except ValidationError:
            node_id = node.get("id") if isinstance(node, dict) else None
            if not isinstance(node_id, str) or not NODE_ID_PATTERN.fullmatch(node_id):
                node_id = f"_invalid_node_{index}"
            placeholders.add(node_id)
            node = {"id": node_id, "task": {"type": PLACEHOLDER_TASK}}
        repaired.append(node)
    if not placeholders:
        return None
    try:
        document = PipelineDocument.model_validate({**data, "spec": {**spec, "nodes": repaired}})
    except ValidationError:
        return None
    return document, frozenset(placeholders)


def parse_pipeline_file(
    path: str | Path, *, task_paths: Sequence[str | Path] = (), keep_going: bool = False
) -> ParsedPipeline:
    """Parse a pipeline file, with the Task files next to it and in its tasks/ folder."""
    file = Path(path)
    text = _read(file)
    return parse_pipeline_text(
        text, str(path), task_paths=task_paths, base_dir=file.parent, keep_going=keep_going
    )
