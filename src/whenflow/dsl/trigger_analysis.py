"""Static facts about trigger expressions: what they reference and what they wait for.

`waits_when_true` answers "which nodes are certainly terminal once this
expression is true?" — used to check that an explicit `startWhen` waits for
every node its bindings read (DESIGN.md §4). Event atoms count as waiting only
for exact node names and settling events (`completed`, `failed`, `skipped`...).

A glob never matches the node that declares it (`owner`): a catch-all
`startWhen: "event:*.failed"` waits for the other nodes, not for itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from fnmatch import fnmatchcase

from whenflow.domain.events import EXTERNAL_SOURCE, PIPELINE_SOURCE, SETTLING_NODE_EVENTS
from whenflow.dsl.event_counts import grows_with_events, strict_reads
from whenflow.dsl.templates import TemplateInfo, analyze_expression, analyze_template
from whenflow.dsl.trigger_ast import And, ConditionAtom, EventAtom, Expr, Literal, Not, Or

_GLOB_CHARS = frozenset("*?[")


def is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def pattern_sources(pattern: str, node_ids: Collection[str], owner: str | None = None) -> list[str]:
    """Node ids the source part of an event pattern can match.

    A glob source never matches `owner`, the node whose expression holds the pattern.
    """
    source = pattern.partition(".")[0]
    if not is_glob(source):
        return [source] if source in node_ids else []
    return [n for n in node_ids if n != owner and fnmatchcase(n, source)]


def pattern_has_outside_source(pattern: str) -> bool:
    """Whether the pattern names `pipeline.*` or `external.*` events.

    The source must be written out: a glob like `e*` means nodes, never
    `external`, or a typo would make a trigger wait for outside events forever.
    """
    source = pattern.partition(".")[0]
    return source in (PIPELINE_SOURCE, EXTERNAL_SOURCE)


def condition_node_reads(
    condition: str, node_ids: Collection[str], owner: str | None = None
) -> frozenset[str]:
    """Nodes whose state or variables a `{{ }}` condition depends on."""
    return template_node_reads(analyze_expression(condition), node_ids, owner)


def template_node_reads(
    info: TemplateInfo, node_ids: Collection[str], owner: str | None = None
) -> frozenset[str]:
    """Every node a template reads: by name (variables, `settled(a)`, `any_ok('a')`)
    and through the events of `events(...)`; a non-constant pattern reads every node."""
    reads = {n for n in info.names if n in node_ids}
    for pattern in info.event_patterns:
        reads.update(pattern_sources(pattern, node_ids, owner))
    if info.dynamic_events:
        reads.update(n for n in node_ids if n != owner)
    return frozenset(reads)


def referenced_nodes(
    expr: Expr, node_ids: Collection[str], owner: str | None = None
) -> frozenset[str]:
    """Every node an expression mentions, through events or variables."""
    found: set[str] = set()
    for atom in _walk_atoms(expr):
        if isinstance(atom, EventAtom):
            found.update(pattern_sources(atom.pattern, node_ids, owner))
        else:
            found.update(condition_node_reads(atom.source, node_ids, owner))
    return frozenset(found)


def _walk_atoms(expr: Expr) -> Iterable[EventAtom | ConditionAtom]:
    if isinstance(expr, EventAtom | ConditionAtom):
        yield expr
    elif isinstance(expr, Not):
        yield from _walk_atoms(expr.operand)
    elif isinstance(expr, And | Or):
        for operand in expr.operands:
            yield from _walk_atoms(operand)


def counted_early(
    expr: Expr, texts: Iterable[str], node_ids: Collection[str], owner: str | None = None
) -> frozenset[str]:
    """Nodes `expr` may be true while they run, through a count over their events
    (`dsl.event_counts`), and that `texts` (the node's rendered fields) read only
    through constant `events(...)` patterns: those fields see the events so far."""
    counted: set[str] = set()
    for atom in _walk_atoms(expr):
        if isinstance(atom, ConditionAtom) and grows_with_events(atom.source):
            for pattern in analyze_expression(atom.source).event_patterns:
                counted.update(pattern_sources(pattern, node_ids, owner))
    for text in texts if counted else ():
        info = analyze_template(text)
        if info.dynamic_events:
            return frozenset()
        counted.difference_update(info.names)
    return frozenset(counted)


def waits_when_true(
    expr: Expr, node_ids: Collection[str], owner: str | None = None
) -> frozenset[str]:
    """Nodes certainly terminal whenever `expr` is true."""
    return _waits(expr, node_ids, owner, want=True)


def _waits(
    expr: Expr, node_ids: Collection[str], owner: str | None, *, want: bool
) -> frozenset[str]:
    if isinstance(expr, Literal):
        return frozenset()
    if isinstance(expr, ConditionAtom):
        # A condition is only evaluated once every node it reads is terminal, but
        # one that only grows with events may be true while the nodes it counts run.
        if want and grows_with_events(expr.source):
            return strict_reads(expr.source, node_ids)
        return condition_node_reads(expr.source, node_ids, owner)
    if isinstance(expr, EventAtom):
        if want:
            source, _, name = expr.pattern.partition(".")
            if not is_glob(source) and source in node_ids and name in SETTLING_NODE_EVENTS:
                return frozenset({source})
            return frozenset()
        # False means every node the pattern can match is terminal.
        if pattern_has_outside_source(expr.pattern):
            return frozenset()
        return frozenset(pattern_sources(expr.pattern, node_ids, owner))
    if isinstance(expr, Not):
        return _waits(expr.operand, node_ids, owner, want=not want)
    parts = [_waits(o, node_ids, owner, want=want) for o in expr.operands]
    union = isinstance(expr, And) == want  # AND-true and OR-false need every operand
    if union:
        return frozenset().union(*parts)
    result = parts[0]
    for part in parts[1:]:
        result &= part
    return result
