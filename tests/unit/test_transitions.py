"""Node state transitions (DESIGN.md §5), checked pair by pair over the whole matrix."""

from __future__ import annotations

import itertools

import pytest

from whenflow.domain.errors import WhenflowError
from whenflow.domain.states import TERMINAL_NODE_STATES, NodeState
from whenflow.engine.transitions import (
    RULES,
    IllegalTransition,
    TransitionRule,
    rule_for,
    transition,
)

S = NodeState

# Written out from DESIGN.md §5, not derived from the rule table.
EXPECTED: frozenset[tuple[NodeState, NodeState]] = frozenset(
    {
        (S.PENDING, S.RUNNING),  # startWhen true
        (S.PENDING, S.WAITING),  # approval node parks
        (S.PENDING, S.FAILED),  # trigger condition raised
        (S.PENDING, S.SKIPPED),  # startWhen false / unsatisfiable
        (S.PENDING, S.STOPPED),  # stopWhen before start
        (S.PENDING, S.CANCELLED),
        (S.RUNNING, S.RUNNING),  # recover: new attempt after a crash
        (S.RUNNING, S.WAITING),
        (S.RUNNING, S.COMPLETED),
        (S.RUNNING, S.RETRYING),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.STOPPED),
        (S.RUNNING, S.CANCELLED),
        (S.RETRYING, S.RUNNING),
        (S.RETRYING, S.FAILED),
        (S.RETRYING, S.STOPPED),
        (S.RETRYING, S.CANCELLED),
        (S.WAITING, S.COMPLETED),  # approved or rejected
        (S.WAITING, S.FAILED),
        (S.WAITING, S.STOPPED),
        (S.WAITING, S.CANCELLED),
    }
)

ALL_PAIRS = list(itertools.product(NodeState, NodeState))


def _pair_id(pair: tuple[NodeState, NodeState]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_matrix_covers_every_state() -> None:
    assert len(ALL_PAIRS) == len(NodeState) ** 2 == 81


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=[_pair_id(p) for p in ALL_PAIRS])
def test_pair(pair: tuple[NodeState, NodeState]) -> None:
    source, target = pair
    rule = rule_for(source, target)
    if pair in EXPECTED:
        assert rule is not None, f"{source} -> {target} should be allowed"
        assert source in rule.sources
        assert rule.target is target
        assert transition("n1", source, target) is rule
    else:
        assert rule is None, f"{source} -> {target} should be refused, {rule} allows it"
        with pytest.raises(IllegalTransition) as info:
            transition("n1", source, target)
        err = info.value
        assert isinstance(err, WhenflowError)
        assert (err.source, err.target) == (source, target)
        assert "'n1'" in str(err)
        assert f"from {source} to {target}" in str(err)


@pytest.mark.parametrize("state", sorted(TERMINAL_NODE_STATES))
def test_terminal_states_have_no_way_out(state: NodeState) -> None:
    assert state.is_terminal
    assert [t for t in NodeState if rule_for(state, t) is not None] == []


def test_every_non_terminal_state_can_end() -> None:
    for state in NodeState:
        if state.is_terminal:
            continue
        assert any(rule_for(state, t) for t in TERMINAL_NODE_STATES), state


def test_rules_cover_exactly_the_expected_pairs() -> None:
    covered = {(source, rule.target) for rule in RULES for source in rule.sources}
    assert covered == EXPECTED


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_every_rule_explains_itself(rule: TransitionRule) -> None:
    assert rule.name.isidentifier()
    doc = rule.doc.strip()
    assert doc, f"rule {rule.name} has no docstring"
    assert len(doc.split()) >= 8, f"rule {rule.name}: {doc!r} names no reason"
    assert doc.endswith("."), doc
    assert rule.sources, rule.name


def test_rule_names_are_unique() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))


def test_named_rules_for_the_races_in_the_design() -> None:
    # A stale result after a stop is refused; a skipped node cannot start.
    assert rule_for(S.STOPPED, S.COMPLETED) is None
    assert rule_for(S.SKIPPED, S.RUNNING) is None
    rule = rule_for(S.RUNNING, S.RUNNING)
    assert rule is not None
    assert rule.name == "recover"
    rule = rule_for(S.RETRYING, S.RUNNING)
    assert rule is not None
    assert rule.name == "start"
