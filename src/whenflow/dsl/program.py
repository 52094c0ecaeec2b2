"""A validated pipeline compiled for the engine (DESIGN.md §4).

`build_program` runs every static check on a parsed definition and, when they
all pass, returns a `PipelineProgram`: each node's effective `startWhen` as a
syntax tree, its templates compiled once, and what it reads. Problems are
collected, located (`file:line:col`) and raised together as DefinitionErrors,
with those of the earlier phases (`prior_issues`); warnings (valid but risky
constructs) ride on the program.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from whenflow.domain.definitions import NodeDefinition, PipelineDefinition, TaskSignature, TaskSpec
from whenflow.domain.errors import DefinitionErrors, DefinitionIssue, WhenflowError
from whenflow.domain.events import EXTERNAL_SOURCE, PIPELINE_SOURCE
from whenflow.dsl.approval import APPROVAL_TASK_TYPE, ApprovalSpec
from whenflow.dsl.compiled_values import compile_value, iter_strings
from whenflow.dsl.each_source import check_each, each_start
from whenflow.dsl.event_names import (
    SUBPIPELINE_EVENTS,
    EventCatalog,
    declared_events,
)
from whenflow.dsl.finally_checks import ENDING_EVENT, ENDING_ONLY, check_finally_refs, named_nodes
from whenflow.dsl.node_checks import (
    IssueCollector,
    Locator,
    check_approval,
    check_shell_node,
    check_signature,
    find_cycle,
    unknown_node,
)
from whenflow.dsl.shell_checks import SHELL_TASK_TYPE
from whenflow.dsl.templates import (
    ENDING_SCOPE,
    RESERVED_NAMES,
    CompiledTemplate,
    TemplateSyntaxProblem,
    analyze_expression,
    compile_condition,
    compile_template,
)
from whenflow.dsl.trigger_analysis import (
    counted_early,
    pattern_has_outside_source,
    pattern_sources,
    referenced_nodes,
    template_node_reads,
    waits_when_true,
)
from whenflow.dsl.trigger_ast import And, EventAtom, Expr, atoms, to_source
from whenflow.dsl.trigger_parser import ExpressionSyntaxError, parse_trigger

# Task config fields rendered per attempt, by task type; every other field is descriptive.
RENDERED_CONFIG_FIELDS: Mapping[str, tuple[str, ...]] = {
    "shell": ("command", "env", "workdir"),
    "http": ("url", "headers", "query", "json", "data"),
    "llm": ("prompt", "system", "messages", "model", "apiKey", "baseUrl"),
    APPROVAL_TASK_TYPE: ("message",),
}
RESERVED_NODE_IDS = RESERVED_NAMES | {PIPELINE_SOURCE, EXTERNAL_SOURCE}
ITEM_NAMES = frozenset({"item", "index"})
EACH_NAMES = frozenset({"event", "index"})
LOCAL_NAMES = ITEM_NAMES | EACH_NAMES


class TaskChecker(Protocol):
    """What validation needs to know about executors (the TaskRunner satisfies it).

    A checker may also have `rendered_fields(task_type) -> tuple[str, ...]`:
    the config fields of that type rendered per attempt (an executor's
    `rendered_fields` attribute), besides those of RENDERED_CONFIG_FIELDS.
    """

    def knows(self, task_type: str) -> bool: ...

    def check(self, request_task: Any) -> list[str]: ...


def _rendered_fields(checker: TaskChecker, task_type: str) -> tuple[str, ...]:
    fields = RENDERED_CONFIG_FIELDS.get(task_type, ())
    declared = getattr(checker, "rendered_fields", None)
    if callable(declared):
        fields = (*fields, *(f for f in declared(task_type) if f not in fields))
    return fields


SignatureResolver = Callable[[TaskSpec], TaskSignature | None]
ChildLoader = Callable[[str], "PipelineProgram"]
"""Loads the pipeline a `pipeline` task names; raises DefinitionErrors or WhenflowError."""

# The task type run by the engine itself rather than an executor: a child
# execution of another pipeline (DESIGN.md §5, sub-pipelines).
SUBPIPELINE_TASK_TYPE = "pipeline"
_SUBPIPELINE_FIELDS = ("pipeline",)


@dataclass(frozen=True)
class NodeProgram:
    definition: NodeDefinition
    index: int
    start: Expr
    stop: Expr | None
    bindings: Mapping[str, Any]
    for_each: CompiledTemplate | None
    rendered_config: Mapping[str, Any]
    reads: frozenset[str]
    signature: TaskSignature | None
    child: PipelineProgram | None = None
    """The compiled pipeline of a `pipeline` task."""
    approval: ApprovalSpec | None = None
    """The spec of an `approval` task, which the engine decides itself."""
    emits: frozenset[str] = frozenset()
    """The custom events its task may publish; `ctx.emit` of any other is refused."""
    each: str | None = None
    """The event type (`price.buy_signal`) an `each:` node runs one instance per."""

    @property
    def id(self) -> str:
        return self.definition.id


@dataclass(frozen=True)
class PipelineProgram:
    definition: PipelineDefinition
    nodes: tuple[NodeProgram, ...]
    stop: Expr | None
    outputs: Mapping[str, Any]
    by_id: Mapping[str, NodeProgram] = field(default_factory=dict)
    warnings: tuple[DefinitionIssue, ...] = ()
    """Valid but risky constructs (`whenflow validate` prints them), located."""

    def effective_start_when(self, node_id: str) -> str:
        return to_source(self.by_id[node_id].start)

    @property
    def listens_outside(self) -> bool:
        """Whether someone outside can change this pipeline's course: an approval
        node, or a trigger waiting for an `external.*` event."""
        exprs = [self.stop] if self.stop is not None else []
        for node in self.nodes:
            if node.approval is not None:
                return True
            exprs.append(node.start)
            if node.stop is not None:
                exprs.append(node.stop)
        return any(
            isinstance(atom, EventAtom) and atom.pattern.startswith(f"{EXTERNAL_SOURCE}.")
            for expr in exprs
            for atom in atoms(expr)
        )


def _template_names_check(
    c: IssueCollector,
    text: str,
    node_ids: Collection[str],
    catalog: EventCatalog,
    local_names: frozenset[str],
    node_id: str | None,
    *fields: str | int,
    allow_ending: bool = False,
) -> frozenset[str]:
    """Check one rendered string; return the node ids it reads (by name or `events()`)."""
    try:
        info = compile_template(text).info  # compiled here, so a failure has a location
    except TemplateSyntaxProblem as exc:
        c.add(f"template syntax error: {exc}", node_id, *fields)
        return frozenset()
    except WhenflowError as exc:
        c.add(str(exc), node_id, *fields)
        return frozenset()
    for name in sorted(info.names):
        if name in node_ids:
            continue
        if name in LOCAL_NAMES and name not in local_names:
            where = {"event": "each", "item": "forEach"}.get(name, "forEach or each")
            c.add(f"'{name}' is only defined in a node with {where}", node_id, *fields)
        elif name == ENDING_SCOPE and not allow_ending:
            c.add(ENDING_ONLY, node_id, *fields)
        elif name not in RESERVED_NAMES:
            c.add(unknown_node(name, node_ids), node_id, *fields)
    for pattern in info.event_patterns:
        problem = _pattern_problem(pattern, node_ids, catalog, node_id)
        if problem is not None:
            c.add(f"events({pattern!r}): {problem}", node_id, *fields)
    return template_node_reads(info, node_ids, node_id)


def _pattern_problem(
    pattern: str, node_ids: Collection[str], catalog: EventCatalog, owner: str | None
) -> str | None:
    """Why an event pattern can never match, or None."""
    if not pattern_sources(pattern, node_ids, owner) and not pattern_has_outside_source(pattern):
        source = pattern.partition(".")[0]
        return f"event:{pattern} can never happen: {unknown_node(source, node_ids)}"
    return catalog.problem(pattern, owner)


def _parse_trigger_field(
    c: IssueCollector,
    text: str,
    node_ids: Collection[str],
    catalog: EventCatalog,
    node_id: str | None,
    fld: str,
    allow_ending: bool = False,
) -> Expr | None:
    try:
        expr = parse_trigger(text)
    except ExpressionSyntaxError as exc:
        c.add(f"syntax error: {exc.message}", node_id, fld, offset=exc.column)
        return None
    ok = True
    for atom in atoms(expr):
        if isinstance(atom, EventAtom):
            problem = _pattern_problem(atom.pattern, node_ids, catalog, node_id)
            if problem is not None:
                c.add(problem, node_id, fld, offset=atom.column)
                ok = False
            continue
        try:
            info = analyze_expression(atom.source)
            compile_condition(atom.source)  # compiled here, so a failure has a location
        except TemplateSyntaxProblem as exc:
            c.add(f"condition syntax error: {exc}", node_id, fld, offset=atom.column)
            ok = False
            continue
        except WhenflowError as exc:
            c.add(str(exc), node_id, fld, offset=atom.column)
            ok = False
            continue
        for name in sorted(info.names):
            if name in LOCAL_NAMES:
                c.add(f"'{name}' is not defined in a trigger", node_id, fld, offset=atom.column)
                ok = False
            elif name == ENDING_SCOPE and not allow_ending:
                c.add(ENDING_ONLY, node_id, fld, offset=atom.column)
                ok = False
            elif name not in node_ids and name not in RESERVED_NAMES:
                c.add(unknown_node(name, node_ids), node_id, fld, offset=atom.column)
                ok = False
        for pattern in info.event_patterns:
            problem = _pattern_problem(pattern, node_ids, catalog, node_id)
            if problem is not None:
                c.add(f"events({pattern!r}): {problem}", node_id, fld, offset=atom.column)
                ok = False
    return expr if ok else None


def _default_start(reads: frozenset[str], order: Mapping[str, int]) -> Expr:
    operands: list[Expr] = [EventAtom(f"{PIPELINE_SOURCE}.started")]
    operands.extend(EventAtom(f"{n}.completed") for n in sorted(reads, key=order.__getitem__))
    return operands[0] if len(operands) == 1 else And(tuple(operands))


def _load_child(
    c: IssueCollector, node: NodeDefinition, load_child: ChildLoader | None
) -> PipelineProgram | None:
    config = node.task.config
    for key in config:
        if key not in _SUBPIPELINE_FIELDS:
            c.add(f"pipeline task: unknown field {key!r}; known fields: pipeline", node.id, "task")
    target = config.get("pipeline")
    if not isinstance(target, str) or not target:
        c.add(
            "pipeline task: `pipeline` must name a pipeline file, e.g. ./child.yaml",
            node.id,
            "task",
        )
        return None
    if load_child is None:
        c.add(
            "pipeline tasks need a pipeline loader here; run the file with whenflow",
            node.id,
            "task",
        )
        return None
    try:
        return load_child(target)
    except DefinitionErrors as exc:
        more = f" (and {len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
        c.add(
            f"sub-pipeline {target!r} is invalid: {exc.issues[0]}{more}",
            node.id,
            "task",
            "pipeline",
        )
    except WhenflowError as exc:
        c.add(f"sub-pipeline {target!r}: {exc}", node.id, "task", "pipeline")
    return None


class _KnownTypes:
    """`checker.knows`, asked once per task type rather than once per node."""

    def __init__(self, checker: TaskChecker) -> None:
        self._checker = checker
        self._known: dict[str, bool] = {}

    def knows(self, task_type: str) -> bool:
        found = self._known.get(task_type)
        if found is None:
            found = self._known[task_type] = self._checker.knows(task_type)
        return found


def _task_signature(
    node: NodeDefinition, checker: _KnownTypes, resolve_signature: SignatureResolver | None
) -> TaskSignature | None:
    """The declared signature of a node's task, resolved from its code when it has one."""
    signature = node.task.signature
    task_type = node.task.type
    if task_type in (SUBPIPELINE_TASK_TYPE, APPROVAL_TASK_TYPE) or not checker.knows(task_type):
        return signature
    if signature is None and resolve_signature is not None:
        signature = resolve_signature(node.task)
    return signature


def build_program(
    definition: PipelineDefinition,
    locator: Locator,
    checker: TaskChecker,
    resolve_signature: SignatureResolver | None = None,
    load_child: ChildLoader | None = None,
    *,
    prior_issues: Sequence[DefinitionIssue] = (),
    unchecked: Collection[str] = (),
) -> PipelineProgram:
    """Validate `definition` and compile it; raise DefinitionErrors listing every problem.

    `load_child` compiles the pipelines that `pipeline` tasks name; without it
    such tasks are an error. `prior_issues` are the problems earlier phases
    found (they are raised with this phase's); `unchecked` names nodes whose
    definition those phases could not read: they stand in for their ids only.
    """
    c = IssueCollector(locator)
    c.issues.extend(prior_issues)
    # An insertion-ordered dict: O(1) membership, iteration in definition order.
    node_ids = order = {n: i for i, n in enumerate(definition.node_ids)}
    checked = [n for n in definition.nodes if n.id not in unchecked]
    known = _KnownTypes(checker)
    signatures = {n.id: _task_signature(n, known, resolve_signature) for n in checked}
    declared = {n.id: declared_events(n, signatures[n.id]) for n in checked}
    catalog = EventCatalog({n.id: n for n in checked}, declared, SUBPIPELINE_TASK_TYPE, unchecked)
    programs: list[NodeProgram] = []
    start_refs: dict[str, frozenset[str]] = {}
    finally_ids = {n.id for n in checked if n.is_finally}
    for index, node in enumerate(definition.nodes):
        if node.id in unchecked:
            continue
        issues_before = len(c.issues)
        if node.id in RESERVED_NODE_IDS:
            c.add(f"{node.id!r} is a reserved name; choose another node id", node.id, "id")
        allow_item = (ITEM_NAMES if node.for_each is not None else frozenset()) | (
            EACH_NAMES if node.each is not None else frozenset()
        )
        final = node.is_finally
        reads: set[str] = set()
        for key, value in node.input_bindings.items():
            for sub, text in iter_strings(value):
                reads |= _template_names_check(
                    c,
                    text,
                    node_ids,
                    catalog,
                    allow_item,
                    node.id,
                    "inputBindings",
                    key,
                    *sub,
                    allow_ending=final,
                )
        if node.for_each is not None:
            reads |= _template_names_check(
                c,
                node.for_each,
                node_ids,
                catalog,
                frozenset(),
                node.id,
                "forEach",
                allow_ending=final,
            )
        rendered_fields = _rendered_fields(checker, node.task.type)
        rendered_config = {k: node.task.config[k] for k in rendered_fields if k in node.task.config}
        for key, value in rendered_config.items():
            for sub, text in iter_strings(value):
                reads |= _template_names_check(
                    c,
                    text,
                    node_ids,
                    catalog,
                    allow_item,
                    node.id,
                    "task",
                    key,
                    *sub,
                    allow_ending=final,
                )
        if node.id in reads:
            c.add("a node cannot read its own outputs", node.id, "inputBindings")
        frozen_reads = frozenset(reads)
        if node.task.type == SHELL_TASK_TYPE:
            check_shell_node(c, node)

        child: PipelineProgram | None = None
        approval: ApprovalSpec | None = None
        signature = signatures[node.id]
        emits = declared[node.id]
        if node.task.type == SUBPIPELINE_TASK_TYPE:
            emits |= SUBPIPELINE_EVENTS  # the engine announces the child through ctx.emit
            child = _load_child(c, node, load_child)
            if child is not None:
                signature = TaskSignature(inputs=dict(child.definition.inputs), outputs={})
        elif node.task.type == APPROVAL_TASK_TYPE:
            approval = check_approval(c, node)
        elif not known.knows(node.task.type):
            c.add(f"unknown task type {node.task.type!r}", node.id, "task", "type")
        else:
            for problem in checker.check(node.task):
                c.add(problem, node.id, "task")
        check_signature(c, node, signature)
        each = check_each(c, node, node_ids, declared)

        start: Expr | None
        if final:
            # A finally node starts on `pipeline.ending`, its own startWhen ANDed (DESIGN §5).
            start = EventAtom(ENDING_EVENT)
            if node.start_when is not None:
                own = _parse_trigger_field(
                    c, node.start_when, node_ids, catalog, node.id, "startWhen", allow_ending=True
                )
                start = None if own is None else And((start, own))
        elif node.start_when is None:
            start = _default_start(frozen_reads, order)
            if each is not None:
                start = each_start(start, each)
        else:
            start = _parse_trigger_field(
                c, node.start_when, node_ids, catalog, node.id, "startWhen"
            )
            if start is not None:
                unwaited = frozen_reads - waits_when_true(start, node_ids, node.id)
                if unwaited:
                    texts = [t for _, t in iter_strings([dict(node.input_bindings), node.for_each])]
                    texts += [t for _, t in iter_strings(rendered_config)]
                    unwaited -= counted_early(start, texts, node_ids, node.id)
                for missing in sorted(unwaited, key=order.__getitem__):
                    c.add(
                        f"the node reads {missing!r} but startWhen can be true before "
                        f"{missing!r} has finished; add event:{missing}.completed",
                        node.id,
                        "startWhen",
                    )
        stop = None
        if node.stop_when is not None:
            stop = _parse_trigger_field(c, node.stop_when, node_ids, catalog, node.id, "stopWhen")
        if start is None or node.id in RESERVED_NODE_IDS:
            continue
        if finally_ids:
            check_finally_refs(c, node, named_nodes(start, node_ids, node.id) | reads, finally_ids)
        if not final:  # a finally node waits for nothing but the ending: no cycle through it
            start_refs[node.id] = referenced_nodes(start, node_ids, node.id)
        if len(c.issues) > issues_before:
            continue  # its templates may be unsafe: never compile them
        programs.append(
            NodeProgram(
                definition=node,
                index=index,
                start=start,
                stop=stop,
                bindings=compile_value(dict(node.input_bindings)),
                for_each=compile_value(node.for_each) if node.for_each is not None else None,
                rendered_config=compile_value(rendered_config),
                reads=frozen_reads,
                signature=signature,
                child=child,
                approval=approval,
                emits=emits,
                each=each,
            )
        )

    cycle = find_cycle(start_refs, node_ids)
    if cycle:
        c.add(
            "these nodes wait for each other and can never start: " + " -> ".join(cycle),
            cycle[0],
            "startWhen",
        )
    pipeline_stop = None
    if definition.stop_when is not None:
        pipeline_stop = _parse_trigger_field(
            c, definition.stop_when, node_ids, catalog, None, "stopWhen"
        )
    for key, value in definition.outputs.items():
        for sub, text in iter_strings(value):
            _template_names_check(
                c, text, node_ids, catalog, frozenset(), None, "outputs", key, *sub
            )
    if c.issues:
        raise DefinitionErrors(c.issues)
    outputs = compile_value(dict(definition.outputs))
    return PipelineProgram(
        definition=definition,
        nodes=tuple(programs),
        stop=pipeline_stop,
        outputs=outputs,
        by_id={p.id: p for p in programs},
        warnings=tuple(c.warnings),
    )
