"""Three-valued trigger evaluation (DESIGN.md §4): Kleene's rules, incremental and exact."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whenflow.dsl.templates import compile_condition
from whenflow.dsl.trigger_ast import And, EventAtom, Expr, Literal, Not, Or
from whenflow.engine.trigger_eval import (
    Gate,
    Tri,
    TriggerTree,
    kleene_and,
    kleene_not,
    kleene_or,
)

UNKNOWN: Tri = None
VALUES: tuple[Tri, ...] = (True, False, UNKNOWN)

# ---------------------------------------------------------------------------
# Truth tables

# Written out, not derived: (left, right) -> (and, or)
TRUTH_TABLE: dict[tuple[Tri, Tri], tuple[Tri, Tri]] = {
    (True, True): (True, True),
    (True, False): (False, True),
    (True, None): (None, True),
    (False, True): (False, True),
    (False, False): (False, False),
    (False, None): (False, None),
    (None, True): (None, True),
    (None, False): (False, None),
    (None, None): (None, None),
}


def test_design_examples() -> None:
    assert kleene_and([False, UNKNOWN]) is False
    assert kleene_and([UNKNOWN, False]) is False
    assert kleene_or([True, UNKNOWN]) is True
    assert kleene_or([UNKNOWN, True]) is True
    assert kleene_not(UNKNOWN) is None


@pytest.mark.parametrize(("left", "right"), list(TRUTH_TABLE))
def test_binary_truth_table(left: Tri, right: Tri) -> None:
    want_and, want_or = TRUTH_TABLE[(left, right)]
    assert kleene_and([left, right]) is want_and
    assert kleene_or([left, right]) is want_or


def test_not_truth_table() -> None:
    assert kleene_not(True) is False
    assert kleene_not(False) is True
    assert kleene_not(None) is None


def test_n_ary_gates_agree_with_folding_the_binary_table() -> None:
    for size in (1, 2, 3, 4):
        for values in itertools.product(VALUES, repeat=size):
            folded_and, folded_or = values[0], values[0]
            for v in values[1:]:
                folded_and = TRUTH_TABLE[(folded_and, v)][0]
                folded_or = TRUTH_TABLE[(folded_or, v)][1]
            assert kleene_and(list(values)) is folded_and, values
            assert kleene_or(list(values)) is folded_or, values


# ---------------------------------------------------------------------------
# Incremental trees against a direct evaluation


def evaluate(expr: Expr, leaves: dict[str, Tri]) -> Tri:
    """Reference: Kleene evaluation of the whole expression from scratch."""
    if isinstance(expr, EventAtom):
        return leaves[expr.pattern]
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Not):
        return kleene_not(evaluate(expr.operand, leaves))
    if isinstance(expr, And):
        return kleene_and([evaluate(o, leaves) for o in expr.operands])
    if isinstance(expr, Or):
        return kleene_or([evaluate(o, leaves) for o in expr.operands])
    raise TypeError(f"unexpected node {expr!r}")


def root_value(tree: TriggerTree) -> Tri:
    """The root's current value (a call, so type checkers do not pin an earlier read)."""
    return tree.value


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[TriggerTree, bool]] = []

    def __call__(self, tree: TriggerTree, value: bool) -> None:
        self.calls.append((tree, value))


# Shapes use the placeholder "?" for an event leaf; `_number_events` gives each
# its own pattern, so every leaf is decided independently.
_PLACEHOLDER = EventAtom("?")


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    many = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(children.map(Not), many.map(And), many.map(Or))


shapes: st.SearchStrategy[Expr] = st.recursive(
    st.one_of(st.just(_PLACEHOLDER), st.booleans().map(Literal)), _extend, max_leaves=10
)


def _number_events(expr: Expr, counter: itertools.count[int]) -> Expr:
    if isinstance(expr, EventAtom):
        return EventAtom(f"n{next(counter)}.completed")
    if isinstance(expr, Literal):
        return expr
    if isinstance(expr, Not):
        return Not(_number_events(expr.operand, counter))
    if isinstance(expr, And | Or):
        operands = tuple(_number_events(o, counter) for o in expr.operands)
        return And(operands) if isinstance(expr, And) else Or(operands)
    raise TypeError(f"unexpected node {expr!r}")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Expr, list[tuple[str, bool]]]:
    """An expression and an order in which its event leaves are decided, with values."""
    expr = _number_events(draw(shapes), itertools.count())
    patterns = [a.pattern for a in _event_atoms(expr)]
    order = draw(st.permutations(patterns))
    values = draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    return expr, list(zip(order, values, strict=True))


def _event_atoms(expr: Expr) -> list[EventAtom]:
    if isinstance(expr, EventAtom):
        return [expr]
    if isinstance(expr, Not):
        return _event_atoms(expr.operand)
    if isinstance(expr, And | Or):
        return [a for o in expr.operands for a in _event_atoms(o)]
    return []


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_incremental_tree_matches_direct_evaluation(
    scenario: tuple[Expr, list[tuple[str, bool]]],
) -> None:
    expr, steps = scenario
    recorder = Recorder()
    tree = TriggerTree("owner", "start", expr, compile_condition, recorder)
    leaves = {leaf.pattern: leaf for leaf in tree.event_leaves}
    assert sorted(leaves) == sorted(p for p, _ in steps)  # one leaf per distinct pattern
    assert tree.condition_leaves == []

    current: dict[str, Tri] = dict.fromkeys(leaves)
    expected = evaluate(expr, current)
    # A root known from the start (literals alone decide it) is read from
    # `tree.value` by the orchestrator; the callback is for later decisions.
    assert tree.value is expected
    assert tree.root.value is expected
    assert recorder.calls == []
    decided_at_build = expected is not None

    for pattern, value in steps:
        before = expected
        leaves[pattern].settle(value)
        current[pattern] = value
        expected = evaluate(expr, current)
        if before is not None:
            assert expected is before  # Kleene logic is monotonic: a known root stays
        assert tree.value is expected, (pattern, value)
        assert tree.root.value is expected
        if decided_at_build or expected is None:
            assert recorder.calls == []
        else:
            assert recorder.calls == [(tree, expected)]  # once, with the value

    # With every leaf decided, the root is known.
    assert tree.value is not None
    assert len(recorder.calls) == (0 if decided_at_build else 1)


def test_settling_a_leaf_twice_is_a_no_op() -> None:
    recorder = Recorder()
    expr = Or((EventAtom("a.completed"), EventAtom("b.completed")))
    tree = TriggerTree("n", "start", expr, compile_condition, recorder)
    a, b = tree.event_leaves
    a.settle(False)
    a.settle(True)  # ignored: a leaf moves from unknown to known once
    assert a.value is False
    assert tree.value is None
    b.settle(False)
    assert recorder.calls == [(tree, False)]


def test_or_fires_on_first_true_branch() -> None:
    recorder = Recorder()
    expr = Or(tuple(EventAtom(f"n{i}.completed") for i in range(5)))
    tree = TriggerTree("n", "start", expr, compile_condition, recorder)
    tree.event_leaves[3].settle(True)
    assert recorder.calls == [(tree, True)]
    for leaf in tree.event_leaves:
        leaf.settle(False)
    assert recorder.calls == [(tree, True)]


def test_not_of_unknown_stays_unknown() -> None:
    recorder = Recorder()
    tree = TriggerTree("n", "stop", Not(EventAtom("a.completed")), compile_condition, recorder)
    assert root_value(tree) is None
    tree.event_leaves[0].settle(False)
    assert root_value(tree) is True
    assert recorder.calls == [(tree, True)]


def test_literal_root_is_known_without_a_callback() -> None:
    recorder = Recorder()
    tree = TriggerTree(
        "n", "start", And((Literal(False), EventAtom("a.completed"))), compile_condition, recorder
    )
    assert tree.value is False
    tree.event_leaves[0].settle(True)
    assert tree.value is False
    assert recorder.calls == []


# ---------------------------------------------------------------------------
# An AND of plain events is a countdown


def test_and_of_1000_events_is_a_countdown() -> None:
    recorder = Recorder()
    expr = And(tuple(EventAtom(f"n{i}.completed") for i in range(1000)))
    tree = TriggerTree("join", "start", expr, compile_condition, recorder)
    assert len(tree.event_leaves) == 1000
    *first, last = tree.event_leaves
    for leaf in first:
        leaf.settle(True)
        assert recorder.calls == []
    assert tree.value is None
    assert isinstance(tree.root, Gate)
    assert tree.root.n_true == 999
    last.settle(True)
    assert recorder.calls == [(tree, True)]
    assert tree.value is True


def test_and_of_1000_events_fails_at_the_first_false() -> None:
    recorder = Recorder()
    expr = And(tuple(EventAtom(f"n{i}.completed") for i in range(1000)))
    tree = TriggerTree("join", "start", expr, compile_condition, recorder)
    for leaf in tree.event_leaves[:500]:
        leaf.settle(True)
    tree.event_leaves[500].settle(False)
    assert recorder.calls == [(tree, False)]
    for leaf in tree.event_leaves[501:]:
        leaf.settle(True)
    assert recorder.calls == [(tree, False)]
    assert tree.value is False
