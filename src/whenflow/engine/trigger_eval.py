"""Incremental three-valued evaluation of trigger expressions (DESIGN.md §4).

An expression becomes a tree of gates over leaves. A leaf's value only ever
moves from unknown (None) to True or False, once; a gate keeps counts of its
known children, so an update costs O(1) per level and an AND of plain events
is a countdown. When a tree's root becomes known, its `on_decided` callback
fires (the orchestrator then starts, skips or stops the node).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal as Lit

from whenflow.dsl.templates import CompiledTemplate
from whenflow.dsl.trigger_ast import (
    And,
    ConditionAtom,
    EventAtom,
    Expr,
    Literal,
    Not,
    to_source,
)

Tri = bool | None
TreeKind = Lit["start", "stop", "pipeline_stop"]


def kleene_and(values: list[Tri]) -> Tri:
    if any(v is False for v in values):
        return False
    if all(v is True for v in values):
        return True
    return None


def kleene_or(values: list[Tri]) -> Tri:
    if any(v is True for v in values):
        return True
    if all(v is False for v in values):
        return False
    return None


def kleene_not(value: Tri) -> Tri:
    return None if value is None else not value


class _Node:
    __slots__ = ("parent", "value")

    def __init__(self) -> None:
        self.parent: Gate | None = None
        self.value: Tri = None


class Gate(_Node):
    """AND / OR / NOT over children whose values only move from unknown to known."""

    __slots__ = ("children", "kind", "n_false", "n_true", "tree")

    def __init__(self, kind: str, children: list[_Node], tree: TriggerTree) -> None:
        super().__init__()
        self.kind = kind
        self.children = children
        self.tree = tree
        self.n_true = 0
        self.n_false = 0
        for child in children:
            child.parent = self
            if child.value is True:
                self.n_true += 1
            elif child.value is False:
                self.n_false += 1
        self.value = self._compute()

    def _compute(self) -> Tri:
        n = len(self.children)
        if self.kind == "and":
            return False if self.n_false else (True if self.n_true == n else None)
        if self.kind == "or":
            return True if self.n_true else (False if self.n_false == n else None)
        return False if self.n_true else (True if self.n_false else None)

    def child_known(self, value: bool) -> None:
        if value:
            self.n_true += 1
        else:
            self.n_false += 1
        if self.value is not None:
            return
        new = self._compute()
        if new is not None:
            self.value = new
            _propagate(self, new)


class Leaf(_Node):
    __slots__ = ("column", "tree")

    def __init__(self, tree: TriggerTree, column: int) -> None:
        super().__init__()
        self.tree = tree
        self.column = column

    def settle(self, value: bool) -> None:
        """Fix this leaf's value (no-op if already known)."""
        if self.value is not None:
            return
        self.value = value
        _propagate(self, value)

    def describe(self) -> str:
        raise NotImplementedError


class ConstantLeaf(Leaf):
    __slots__ = ()

    def __init__(self, tree: TriggerTree, value: bool, column: int) -> None:
        super().__init__(tree, column)
        self.value = value

    def describe(self) -> str:
        return "true" if self.value else "false"


class EventLeaf(Leaf):
    """`event:PATTERN`; false once every node the pattern can match is terminal."""

    __slots__ = ("candidates_left", "external", "outside", "pattern", "source_glob")

    def __init__(self, tree: TriggerTree, pattern: str, column: int) -> None:
        super().__init__(tree, column)
        self.pattern = pattern
        self.candidates_left = 0
        self.outside = False
        self.source_glob = False
        self.external = False

    def describe(self) -> str:
        if self.value is False:
            return f"event:{self.pattern} can no longer happen"
        return f"event:{self.pattern}"


class ConditionLeaf(Leaf):
    """`{{ ... }}`; evaluated once every node it reads is terminal.

    An event-monotone condition (`events('a.tick') | length >= 3`, see
    `dsl.event_counts`) is also tried at each event it counts once the nodes it
    reads by name (`strict_left`) are terminal, and settled as soon as it is true.
    """

    __slots__ = ("deps_left", "early", "error", "spelled", "strict_left", "template")

    def __init__(self, tree: TriggerTree, template: CompiledTemplate, column: int) -> None:
        super().__init__(tree, column)
        self.template = template
        self.deps_left = 0
        self.early = False
        self.strict_left = 0
        self.error: str | None = None
        self.spelled: str | None = None
        """A count's own text, `count(event:P) >= 3`, shown instead of its condition."""

    def describe(self) -> str:
        shown = self.spelled or "{{ " + self.template.info.source + " }}"
        return shown + " is " + str(self.value).lower()


def _propagate(node: _Node, value: bool) -> None:
    parent = node.parent
    if parent is None:
        tree = node.tree  # type: ignore[attr-defined]
        tree.root_decided(value)
    else:
        parent.child_known(value)


class TriggerTree:
    """One expression of one owner: a node's startWhen or stopWhen, or the pipeline's stopWhen."""

    __slots__ = (
        "condition_leaves",
        "event_leaves",
        "expr",
        "kind",
        "on_decided",
        "owner",
        "root",
        "value",
    )

    def __init__(
        self,
        owner: str,
        kind: TreeKind,
        expr: Expr,
        compile_condition: Callable[[str], CompiledTemplate],
        on_decided: Callable[[TriggerTree, bool], None],
    ) -> None:
        self.owner = owner
        self.kind = kind
        self.expr = expr
        self.on_decided = on_decided
        self.value: Tri = None
        self.event_leaves: list[EventLeaf] = []
        self.condition_leaves: list[ConditionLeaf] = []
        self.root = self._build(expr, compile_condition)
        self.value = self.root.value

    def _build(self, expr: Expr, compile_condition: Callable[[str], CompiledTemplate]) -> _Node:
        if isinstance(expr, EventAtom):
            leaf = EventLeaf(self, expr.pattern, expr.column)
            self.event_leaves.append(leaf)
            return leaf
        if isinstance(expr, ConditionAtom):
            cond = ConditionLeaf(self, compile_condition(expr.source), expr.column)
            cond.spelled = expr.spelled
            self.condition_leaves.append(cond)
            return cond
        if isinstance(expr, Literal):
            return ConstantLeaf(self, expr.value, expr.column)
        if isinstance(expr, Not):
            return Gate("not", [self._build(expr.operand, compile_condition)], self)
        kind = "and" if isinstance(expr, And) else "or"
        return Gate(kind, [self._build(o, compile_condition) for o in expr.operands], self)

    def root_decided(self, value: bool) -> None:
        if self.value is None:
            self.value = value
            self.on_decided(self, value)

    def explain(self) -> str:
        """Why the root has its value, in words: the leaf that decided it."""
        return _explain(self.root, self.value) or to_source(self.expr)


def _explain(node: _Node, want: Tri) -> str | None:
    if isinstance(node, Leaf):
        if isinstance(node, ConditionLeaf) and node.error:
            return node.error
        return node.describe()
    assert isinstance(node, Gate)
    if node.kind == "not":
        return _explain(node.children[0], kleene_not(want))
    decisive = [c for c in node.children if c.value is want]
    if decisive:
        return _explain(decisive[0], want)
    return None
