"""Node state transitions as a table of small named rules (DESIGN.md §5).

Every state change of a node goes through `transition`, so an illegal move
(finishing a node twice, starting a stopped one) is a loud bug instead of a
corrupted execution. Each rule's docstring names the race it prevents.
"""

from __future__ import annotations

from dataclasses import dataclass

from whenflow.domain.errors import WhenflowError
from whenflow.domain.states import NodeState as S


@dataclass(frozen=True, slots=True)
class TransitionRule:
    name: str
    sources: frozenset[S]
    target: S
    doc: str


def _rule(name: str, sources: set[S], target: S, doc: str) -> TransitionRule:
    return TransitionRule(name, frozenset(sources), target, doc)


RULES: tuple[TransitionRule, ...] = (
    _rule(
        "start",
        {S.PENDING, S.RETRYING},
        S.RUNNING,
        "Only a node that has not run, or waits for its next attempt, starts: a trigger "
        "that fires twice cannot start a running node again.",
    ),
    _rule(
        "recover",
        {S.RUNNING},
        S.RUNNING,
        "After a crash a node found running starts a new attempt (at-least-once); the "
        "attempt number fences off the lost one's late result.",
    ),
    _rule(
        "park",
        {S.PENDING, S.RUNNING},
        S.WAITING,
        "An approval node waits for a decision; nothing else may park a node.",
    ),
    _rule(
        "complete",
        {S.RUNNING, S.WAITING},
        S.COMPLETED,
        "Only a running attempt or a decided approval completes: a stale result that "
        "arrives after a stop or cancel is refused.",
    ),
    _rule(
        "schedule_retry",
        {S.RUNNING},
        S.RETRYING,
        "A failed attempt with attempts left waits for its delay; a node that is no "
        "longer running (stopped meanwhile) is not retried.",
    ),
    _rule(
        "fail",
        {S.PENDING, S.RUNNING, S.RETRYING, S.WAITING},
        S.FAILED,
        "The last attempt failed, a retry's bindings cannot be rendered, or a trigger "
        "condition raised (also while waiting for a retry); a terminal node cannot fail twice.",
    ),
    _rule(
        "skip",
        {S.PENDING},
        S.SKIPPED,
        "Only a node that never started can be skipped: a false startWhen cannot "
        "undo a node that already ran.",
    ),
    _rule(
        "stop",
        {S.PENDING, S.RUNNING, S.RETRYING, S.WAITING},
        S.STOPPED,
        "stopWhen ends a node that has not finished; a finished one keeps its outcome.",
    ),
    _rule(
        "cancel",
        {S.PENDING, S.RUNNING, S.RETRYING, S.WAITING},
        S.CANCELLED,
        "A cancel or failFast ends what has not finished and leaves finished nodes as they are.",
    ),
)

_TABLE: dict[tuple[S, S], TransitionRule] = {}
for _r in RULES:
    for _source in _r.sources:
        if (_source, _r.target) in _TABLE:
            raise RuntimeError(f"two rules for {_source} -> {_r.target}")
        _TABLE[(_source, _r.target)] = _r


class IllegalTransition(WhenflowError):
    """A node was asked to move between states no rule allows; this is a bug in whenflow."""

    def __init__(self, node_id: str, source: S, target: S) -> None:
        super().__init__(f"node {node_id!r} cannot go from {source} to {target}")
        self.source = source
        self.target = target


def rule_for(source: S, target: S) -> TransitionRule | None:
    return _TABLE.get((source, target))


def transition(node_id: str, source: S, target: S) -> TransitionRule:
    """The rule allowing source → target, or IllegalTransition."""
    rule = _TABLE.get((source, target))
    if rule is None:
        raise IllegalTransition(node_id, source, target)
    return rule
