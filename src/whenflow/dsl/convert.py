"""YAML data → document models → the domain's frozen definitions.

Two steps, both reporting located `DefinitionIssue`s:

1. `document_from_data`: plain data → `PipelineDocument` / `TaskDocument`;
   each pydantic error becomes a YAML path, a `file:line:col` and plain words
   ("unknown field 'startwhen' (did you mean 'startWhen'?)").
2. `pipeline_from_document` / `task_from_document`: document → domain
   dataclasses. `spec.defaults` fill the nodes' unset `retry` / `timeout`
   (a node's `retry` replaces the default block as a whole, it is not merged
   key by key), and `task: {ref: name@version}` is replaced by the
   referenced TaskDefinition's TaskSpec with `ref` kept. Nothing else is
   interpreted here: templates and triggers are `dsl.program`'s job (build_program).

`DefinitionIssue.field` is a dotted YAML path (`field_name`):

- a node is named by its id and the `spec.` prefix is dropped:
  `nodes.transform_data.startWhen`;
- by its index when its id is missing, invalid or duplicated: `nodes[2].id`;
- every other path is written in full: `spec.inputs.start_date.type`,
  `metadata.version`; list items are `[i]`: `nodes.load.retry.retryOn[0]`.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from whenflow.domain.definitions import (
    Backoff,
    NodeDefinition,
    OnItemError,
    ParamSpec,
    PipelineDefinition,
    RetryPolicy,
    TaskDefinition,
    TaskSignature,
    TaskSpec,
)
from whenflow.domain.errors import DefinitionError, DefinitionErrors, DefinitionIssue
from whenflow.dsl.approval import APPROVAL_TASK_TYPE
from whenflow.dsl.convert_schedules import notify_rules, schedules_of
from whenflow.dsl.schema import (
    TASK_INLINE_TAG,
    TASK_REF_TAG,
    DefaultsModel,
    InlineTaskModel,
    NodeModel,
    ParamModel,
    PipelineDocument,
    RetryModel,
    TaskDocument,
    TaskRefModel,
)
from whenflow.dsl.start_triggers import start_trigger
from whenflow.dsl.yaml_source import SourceMap, YamlPath, field_name

_LOC_NOISE = frozenset({TASK_REF_TAG, TASK_INLINE_TAG, "[key]"})

PLACEHOLDER_TASK = "noop"
"""The task of a node that stands in for one whose definition could not be read."""


def node_ids_of(data: Any) -> list[object]:
    """The `id` of every entry of `spec.nodes` in raw data (None where there is none)."""
    spec = data.get("spec") if isinstance(data, dict) else None
    nodes = spec.get("nodes") if isinstance(spec, dict) else None
    if not isinstance(nodes, list):
        return []
    return [n.get("id") if isinstance(n, dict) else None for n in nodes]


# ---------------------------------------------------------------- step 1


def document_from_data(data: Any, source: SourceMap) -> PipelineDocument | TaskDocument:
    """Validate one YAML document against the Pipeline or Task model, by its `kind`.

    Raises:
        DefinitionError: the document is not a mapping or has no known kind.
        DefinitionErrors: every schema problem of the document, located.
    """
    if not isinstance(data, dict):
        raise DefinitionError(
            DefinitionIssue(
                "a definition must be a mapping with apiVersion, kind, metadata and spec",
                source.locate(()),
            )
        )
    kind = data.get("kind")
    model: type[PipelineDocument] | type[TaskDocument]
    if kind == "Pipeline":
        model = PipelineDocument
    elif kind == "Task":
        model = TaskDocument
    else:
        what = "missing" if kind is None else f"got {_describe(kind)}"
        raise DefinitionError(
            DefinitionIssue(
                f"kind must be Pipeline or Task ({what})", source.locate(("kind",)), "kind"
            )
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        node_ids = node_ids_of(data)
        issues = [_issue(error, model, source, node_ids) for error in exc.errors(include_url=False)]
        issues.sort(key=lambda i: (i.location.line, i.location.column) if i.location else (0, 0))
        raise DefinitionErrors(issues) from None


def _issue(
    error: ErrorDetails, model: type[BaseModel], source: SourceMap, node_ids: Sequence[object]
) -> DefinitionIssue:
    path: YamlPath = tuple(
        p for p in error["loc"] if not (p in _LOC_NOISE or str(p).startswith("function-"))
    )
    kind = error["type"]
    field = field_name(path, node_ids)
    if kind == "missing" and path:
        return DefinitionIssue(
            f"missing required field {path[-1]!r}", source.locate(path[:-1]), field
        )
    if kind == "extra_forbidden" and path:
        if TASK_REF_TAG in error["loc"]:
            message = (
                f"a task given by `ref` takes no other field (found {path[-1]!r}); "
                "put type-specific fields in the Task definition"
            )
            return DefinitionIssue(message, source.locate_key(path), field)
        known = _field_names_at(model, path[:-1]) - {str(path[-1])}
        return DefinitionIssue(_unknown_field(str(path[-1]), known), source.locate_key(path), field)
    return DefinitionIssue(_message(error), source.locate(path), field)


def _unknown_field(key: str, known: set[str]) -> str:
    guess = next(
        (n for n in sorted(known) if n in (to_camel(key), key) or n.lower() == key.lower()), None
    )
    if guess is None:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        guess = close[0] if close else None
    if guess:
        return f"unknown field {key!r} (did you mean {guess!r}?)"
    if known:
        return f"unknown field {key!r}; expected one of: {', '.join(sorted(known))}"
    return f"unknown field {key!r}"


def _message(error: ErrorDetails) -> str:
    kind, msg, value = error["type"], error["msg"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_describe(value)}"
    if kind == "list_type":
        return f"expected a list, got {_describe(value)}"
    if kind == "too_short" and "min_length" in ctx:
        return f"must have at least {ctx['min_length']} item(s)"
    return f"{msg.replace('Input should be', 'must be', 1)}, got {_describe(value)}"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _members(annotation: Any) -> list[Any]:
    """The concrete types inside Annotated / Optional / Union annotations."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _field_names_at(model: type[BaseModel], path: YamlPath) -> set[str]:
    """The YAML keys a mapping at `path` may hold (for "did you mean" suggestions)."""
    current: list[Any] = [model]
    for part in path:
        following: list[Any] = []
        for candidate in (m for c in current for m in _members(c)):
            origin = get_origin(candidate)
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                for name, info in candidate.model_fields.items():
                    if (info.alias or name) == part:
                        following.append(info.annotation)
            elif origin is list and isinstance(part, int):
                following.append(get_args(candidate)[0])
            elif origin is dict and isinstance(part, str):
                following.append(get_args(candidate)[1])
        current = following
    names: set[str] = set()
    for candidate in (m for c in current for m in _members(c)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            names.update(info.alias or name for name, info in candidate.model_fields.items())
    return names


# ---------------------------------------------------------------- step 2


def _params(params: Mapping[str, ParamModel]) -> dict[str, ParamSpec]:
    return {
        name: ParamSpec(p.type, required=p.required, default=p.default, description=p.description)
        for name, p in params.items()
    }


def _retry(model: RetryModel | None) -> RetryPolicy:
    if model is None:
        return RetryPolicy()
    return RetryPolicy(
        max_attempts=model.max_attempts,
        delay_s=model.delay,
        backoff=Backoff(model.backoff),
        max_delay_s=model.max_delay,
        retry_on=tuple(model.retry_on),
    )


def task_from_document(doc: TaskDocument) -> TaskDefinition:
    """A `kind: Task` document as a TaskDefinition; its TaskSpec has ref and signature set."""
    meta, spec = doc.metadata, doc.spec
    signature = TaskSignature(
        inputs=_params(spec.inputs), outputs=_params(spec.outputs), emits=tuple(spec.emits)
    )
    task = TaskSpec(
        type=spec.type,
        config=spec.config,
        signature=signature,
        ref=f"{meta.name}@{meta.version}",
    )
    return TaskDefinition(
        name=meta.name,
        version=meta.version,
        task=task,
        description=spec.description or meta.description,
    )


def _inline_task(block: InlineTaskModel) -> TaskSpec:
    signature = None
    if block.inputs is not None or block.outputs is not None:
        signature = TaskSignature(
            inputs=_params(block.inputs or {}),
            outputs=_params(block.outputs or {}),
            emits=tuple(block.emits or ()),
        )
    return TaskSpec(type=block.type, config=block.config, signature=signature)


def _node_emits(node: NodeModel) -> tuple[str, ...]:
    """The node's `emits:`, and its inline task's when that task declares no signature
    (a signature would make every binding an error unless its inputs are listed)."""
    emits = list(node.emits)
    block = node.task
    if isinstance(block, InlineTaskModel) and block.inputs is None and block.outputs is None:
        emits.extend(e for e in block.emits or () if e not in emits)
    return tuple(emits)


def _unknown_ref(ref: str, tasks: Mapping[str, TaskDefinition]) -> str:
    if not tasks:
        return (
            f"unknown task {ref!r}: no task definitions were found; put a `kind: Task` "
            "file next to the pipeline or in its tasks/ folder, or add it to the task paths"
        )
    close = difflib.get_close_matches(ref, sorted(tasks), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown task {ref!r}{hint}; known tasks: {', '.join(sorted(tasks))}"


def _node(node: NodeModel, task: TaskSpec, defaults: DefaultsModel) -> NodeDefinition:
    return NodeDefinition(
        id=node.id,
        task=task,
        start_when=node.start_when,
        stop_when=node.stop_when,
        input_bindings=dict(node.input_bindings),
        for_each=node.for_each,
        each=node.each,
        max_parallel=node.max_parallel,
        on_item_error=OnItemError(node.on_item_error),
        allow_failure=node.allow_failure,
        retry=_retry(node.retry if node.retry is not None else defaults.retry),
        # `defaults.timeout` bounds task attempts; an approval's wait is its own `timeout`.
        timeout_s=node.timeout
        if node.timeout is not None or task.type == APPROVAL_TASK_TYPE
        else defaults.timeout,
        within_s=node.within,
        description=node.description,
        emits=_node_emits(node),
        deadline_s=node.deadline,
        is_finally=node.is_finally,
    )


def pipeline_from_document(
    doc: PipelineDocument,
    source: SourceMap,
    tasks: Mapping[str, TaskDefinition],
    *,
    source_path: str | None = None,
    source_text: str | None = None,
) -> PipelineDefinition:
    """A Pipeline document as a PipelineDefinition, defaults applied and task refs resolved.

    Raises:
        DefinitionErrors: duplicate node ids (at the later id) and unknown task refs.
    """
    partial = partial_pipeline(doc, source, tasks, source_path=source_path, source_text=source_text)
    if partial.issues:
        raise DefinitionErrors(list(partial.issues))
    return partial.definition


@dataclass(frozen=True)
class PartialPipeline:
    """A definition built despite problems, so later checks can still run.

    A node whose task ref is unknown stands in with a `noop` task and is
    listed in `unchecked`; a node whose id repeats an earlier one is left out.
    """

    definition: PipelineDefinition
    issues: tuple[DefinitionIssue, ...]
    unchecked: frozenset[str]


def _folder_of(source_path: str | None) -> str | None:
    """The absolute folder of the pipeline file, None when it was not read from a file."""
    if not source_path:
        return None
    path = Path(source_path)
    return str(path.resolve().parent) if path.is_file() else None


def partial_pipeline(
    doc: PipelineDocument,
    source: SourceMap,
    tasks: Mapping[str, TaskDefinition],
    *,
    source_path: str | None = None,
    source_text: str | None = None,
    unchecked: frozenset[str] = frozenset(),
) -> PartialPipeline:
    """`pipeline_from_document`, collecting its problems instead of raising them.

    `unchecked` names nodes already known to be placeholders (their schema failed).
    """
    spec = doc.spec
    ids = [n.id for n in spec.nodes]
    base_dir = _folder_of(source_path)
    issues: list[DefinitionIssue] = []
    placeholders = set(unchecked)
    first_index: dict[str, int] = {}
    nodes: list[NodeDefinition] = []
    for index, node in enumerate(spec.nodes):
        if node.id in first_index:
            first = source.locate(("spec", "nodes", first_index[node.id], "id"))
            issues.append(
                DefinitionIssue(
                    f"duplicate node id {node.id!r} (first used at line {first.line}); "
                    "node ids must be unique",
                    source.locate(("spec", "nodes", index, "id")),
                    field_name(("spec", "nodes", index, "id"), ids),
                )
            )
            continue
        first_index[node.id] = index
        if isinstance(node.task, TaskRefModel):
            referenced = tasks.get(node.task.ref)
            if referenced is None:
                path: YamlPath = ("spec", "nodes", index, "task", "ref")
                issues.append(
                    DefinitionIssue(
                        _unknown_ref(node.task.ref, tasks),
                        source.locate(path),
                        field_name(path, ids),
                    )
                )
                placeholders.add(node.id)
                nodes.append(NodeDefinition(id=node.id, task=TaskSpec(type=PLACEHOLDER_TASK)))
                continue
            task = TaskSpec(
                type=referenced.task.type,
                config=referenced.task.config,
                signature=referenced.task.signature,
                ref=node.task.ref,
            )
        else:
            task = _inline_task(node.task)
        if base_dir is not None:
            task = replace(task, base_dir=base_dir)
        nodes.append(_node(node, task, spec.defaults))
    schedules, schedule_issues = schedules_of(spec.schedules, source)
    issues.extend(schedule_issues)
    meta = doc.metadata
    definition = PipelineDefinition(
        name=meta.name,
        version=meta.version,
        nodes=tuple(nodes),
        description=meta.description,
        inputs=_params(spec.inputs),
        outputs=dict(spec.outputs),
        concurrency=spec.concurrency,
        fail_fast=spec.fail_fast,
        stop_when=spec.stop_when,
        timeout_s=spec.timeout,
        finally_grace_s=spec.finally_grace,
        source_path=source_path,
        source_text=source_text,
        schedules=schedules,
        notify=notify_rules(spec.notify),
        triggers=tuple(start_trigger(t) for t in spec.triggers),
    )
    return PartialPipeline(definition, tuple(issues), frozenset(placeholders))
