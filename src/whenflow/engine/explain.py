"""Why a node ran, was skipped or still waits: its triggers replayed from the event log.

`explain_node` evaluates a node's effective `startWhen` (and `stopWhen`) as they
stood at the moment they were decided, from the durable event log alone: each
leaf gets its three-valued value (DESIGN.md §4) and the events that decided it,
with their `seq`. Nothing runs and nothing is written.

The moment is the first event that shows the decision (`<node>.started`,
`.waiting`, `.skipped` for startWhen; `.stopped` for stopWhen) or, for a node
that is still pending, the end of the log. Leaves only ever move from unknown to
known, so any moment after the decision gives the same values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from whenflow.domain.errors import WhenflowError
from whenflow.domain.events import EXTERNAL_SOURCE, PIPELINE_SOURCE, SETTLING_NODE_EVENTS, Event
from whenflow.domain.records import ExecutionSnapshot
from whenflow.dsl.event_counts import grows_with_events, strict_reads
from whenflow.dsl.program import PipelineProgram
from whenflow.dsl.templates import Missing, Namespace, TemplateEvaluationError, compile_condition
from whenflow.dsl.trigger_analysis import condition_node_reads, pattern_sources
from whenflow.dsl.trigger_ast import (
    And,
    ConditionAtom,
    EventAtom,
    Expr,
    Literal,
    Not,
    Or,
    to_source,
)
from whenflow.engine.ports import ArtifactStore
from whenflow.engine.template_helpers import matching_events
from whenflow.engine.trigger_eval import Tri, kleene_and, kleene_not, kleene_or
from whenflow.engine.variable_pool import VariablePool

_START_SHOWN_BY = ("started", "waiting", "skipped")


class NodeNotInPipeline(WhenflowError):
    """`explain` named a node the execution's pipeline does not have."""


@dataclass(frozen=True, slots=True)
class DecidingEvent:
    """An event that decided a leaf: its `seq` and type."""

    seq: int
    event_type: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "eventType": self.event_type}


@dataclass(frozen=True, slots=True)
class Explanation:
    """One node of an expression tree with its value at the moment of the decision.

    `kind` is `and`, `or`, `not`, `event`, `condition` or `literal`; `value` is
    True, False or None (unknown); `reason` says in words what decided it.
    """

    kind: str
    source: str
    value: Tri
    reason: str
    decided_by: tuple[DecidingEvent, ...] = ()
    children: tuple[Explanation, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "value": self.value,
            "reason": self.reason,
            "decidedBy": [d.to_json() for d in self.decided_by],
            "children": [c.to_json() for c in self.children],
        }


@dataclass(frozen=True, slots=True)
class NodeExplanation:
    """Why one node of one execution is where it is."""

    execution_id: str
    node_id: str
    state: str
    verdict: str
    start_when: Explanation
    start_seq: int
    stop_when: Explanation | None = None
    stop_seq: int | None = None
    reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "executionId": self.execution_id,
            "nodeId": self.node_id,
            "state": self.state,
            "verdict": self.verdict,
            "reason": self.reason,
            "startWhen": {"atSeq": self.start_seq, **self.start_when.to_json()},
            "stopWhen": None
            if self.stop_when is None
            else {"atSeq": self.stop_seq, **self.stop_when.to_json()},
        }


class _Replay:
    """The execution as it stood just after event `seq`: which nodes were terminal, what
    had been published, and a template context over the outputs written by then."""

    def __init__(
        self,
        program: PipelineProgram,
        snapshot: ExecutionSnapshot,
        seq: int,
        artifacts: ArtifactStore | None,
    ) -> None:
        self.program = program
        self.node_ids = program.definition.node_ids
        self.events = [e for e in snapshot.events if e.seq <= seq]
        self.terminal_at: dict[str, Event] = {}
        self.completed: set[str] = set()
        for event in self.events:
            source, _, name = event.event_type.partition(".")
            if source in program.by_id and name in SETTLING_NODE_EVENTS:
                self.terminal_at.setdefault(source, event)
                if name == "completed":
                    self.completed.add(source)
        moment = self.events[-1].timestamp if self.events else snapshot.created_at
        pool = VariablePool(
            execution_id=snapshot.execution_id,
            pipeline=snapshot.pipeline_name,
            version=snapshot.pipeline_version,
            inputs=snapshot.inputs,
            node_ids=self.node_ids,
            started_at=snapshot.created_at,
            artifacts=artifacts,
        )
        # A node's outputs are in the pool before its `completed` event (DESIGN.md §3).
        pool.restore([v for v in snapshot.variables if v.scope in self.completed])
        self.context: dict[str, Any] = dict(pool.context)
        self.context.update(
            events=self._events_helper,
            settled=lambda *n: all(self._node(x) in self.terminal_at for x in n),
            any_ok=lambda *n: any(self._node(x) in self.completed for x in n),
            now=lambda: dt.datetime.fromtimestamp(moment, dt.UTC),
            secret=self._secret,
        )

    def _node(self, arg: Any) -> str:
        name = arg._name if isinstance(arg, Namespace) else str(arg)
        if name not in self.program.by_id:
            raise ValueError(f"{name!r} is not a node of this pipeline")
        return name

    def _events_helper(self, pattern: str) -> list[dict[str, Any]]:
        return matching_events(self.events, pattern)

    def _ends(self, nodes: Sequence[str]) -> tuple[DecidingEvent, ...]:
        """The events that ended `nodes`, in seq order."""
        ends = sorted((self.terminal_at[n] for n in nodes), key=lambda e: e.seq)
        return tuple(DecidingEvent(e.seq, e.event_type) for e in ends)

    @staticmethod
    def _secret(name: str) -> str:
        raise WhenflowError(f"secret({name!r}) is not read again to explain a decision")

    def explain(self, expr: Expr) -> Explanation:
        match expr:
            case Literal(value=constant):
                return Explanation("literal", to_source(expr), constant, "a constant")
            case EventAtom():
                return self._event(expr)
            case ConditionAtom():
                return self._condition(expr)
            case Not(operand=operand):
                child = self.explain(operand)
                return Explanation(
                    "not", to_source(expr), kleene_not(child.value), "the negation", (), (child,)
                )
            case And(operands=operands) | Or(operands=operands):
                children = tuple(self.explain(o) for o in operands)
                values = [c.value for c in children]
                is_and = isinstance(expr, And)
                verdict = kleene_and(values) if is_and else kleene_or(values)
                kind = "and" if is_and else "or"
                reason = _gate_reason(kind, verdict)
                return Explanation(kind, to_source(expr), verdict, reason, (), children)
        raise TypeError(f"not an expression node: {expr!r}")

    def _event(self, atom: EventAtom) -> Explanation:
        source = to_source(atom)
        for event in self.events:
            if fnmatchcase(event.event_type, atom.pattern):
                return Explanation(
                    "event",
                    source,
                    True,
                    f"{event.event_type} was published",
                    (DecidingEvent(event.seq, event.event_type),),
                )
        origin = atom.pattern.partition(".")[0]
        if origin in (PIPELINE_SOURCE, EXTERNAL_SOURCE):
            return Explanation("event", source, None, f"no {origin} event matched yet")
        candidates = pattern_sources(atom.pattern, self.node_ids)
        if not candidates:
            return Explanation("event", source, False, "no node can publish it")
        open_ = [n for n in candidates if n not in self.terminal_at]
        if open_:
            return Explanation(
                "event", source, None, "not yet published; waiting for " + ", ".join(open_)
            )
        ends = self._ends(candidates)
        return Explanation(
            "event",
            source,
            False,
            "can no longer happen: " + ", ".join(candidates) + " ended without publishing it",
            ends,
        )

    def _condition(self, atom: ConditionAtom) -> Explanation:
        source = to_source(atom)
        reads = sorted(condition_node_reads(atom.source, self.node_ids))
        open_ = [n for n in reads if n not in self.terminal_at]
        if open_:
            return self._early(atom, open_)
        ends = self._ends(reads)
        try:
            value = compile_condition(atom.source).evaluate(self.context)
        except (TemplateEvaluationError, WhenflowError) as exc:
            return Explanation("condition", source, None, f"evaluation failed: {exc}", ends)
        truth = bool(value) and not isinstance(value, Missing)
        shown = "missing" if isinstance(value, Missing) else _short(value)
        return Explanation("condition", source, truth, f"evaluated to {shown}", ends)

    def _early(self, atom: ConditionAtom, open_: list[str]) -> Explanation:
        """A condition whose nodes still run: true already if it only grows with events."""
        source = to_source(atom)
        waiting = Explanation("condition", source, None, "waiting for " + ", ".join(open_))
        if not grows_with_events(atom.source) or strict_reads(atom.source, open_):
            return waiting
        try:
            value = compile_condition(atom.source).evaluate(self.context)
        except (TemplateEvaluationError, WhenflowError):
            return waiting
        if not value or isinstance(value, Missing):
            return waiting
        patterns = compile_condition(atom.source).info.event_patterns
        last = next(
            (
                e
                for e in reversed(self.events)
                if any(fnmatchcase(e.event_type, p) for p in patterns)
            ),
            None,
        )
        decided = () if last is None else (DecidingEvent(last.seq, last.event_type),)
        reason = f"evaluated to {_short(value)} while {', '.join(open_)} still ran"
        return Explanation("condition", source, True, reason, decided)


def _gate_reason(kind: str, value: Tri) -> str:
    if value is None:
        return "some operand is still unknown"
    if kind == "and":
        return "every operand is true" if value else "an operand is false"
    return "an operand is true" if value else "every operand is false"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first(events: Sequence[Event], types: Sequence[str]) -> Event | None:
    wanted = set(types)
    return next((e for e in events if e.event_type in wanted), None)


def explain_node(
    program: PipelineProgram,
    snapshot: ExecutionSnapshot,
    node_id: str,
    *,
    artifacts: ArtifactStore | None = None,
) -> NodeExplanation:
    """Explain why `node_id` ran, was skipped, was stopped or still waits.

    Raises:
        NodeNotInPipeline: the pipeline has no such node (the message lists them).
    """
    node = program.by_id.get(node_id)
    if node is None:
        known = ", ".join(program.definition.node_ids)
        raise NodeNotInPipeline(
            f"execution {snapshot.execution_id} has no node {node_id!r}; its nodes: {known}"
        )
    last_seq = snapshot.events[-1].seq if snapshot.events else 0
    row = next((r for r in snapshot.nodes if r.node_id == node_id), None)
    state = str(row.state) if row is not None else "pending"
    reason = row.reason if row is not None else None

    shown = _first(snapshot.events, [f"{node_id}.{n}" for n in _START_SHOWN_BY])
    start_seq = shown.seq if shown is not None else last_seq
    start = _Replay(program, snapshot, start_seq, artifacts).explain(node.start)
    if shown is None:
        verdict = f"not started: startWhen is {_word(start.value)} at seq {start_seq}"
    elif shown.event_type.endswith(".skipped"):
        verdict = f"skipped at seq {shown.seq}: startWhen was {_word(start.value)}"
    else:
        verdict = f"started at seq {shown.seq}: startWhen was {_word(start.value)}"

    stop: Explanation | None = None
    stop_seq: int | None = None
    if node.stop is not None:
        stopped = _first(snapshot.events, [f"{node_id}.stopped"])
        ended = _first(snapshot.events, [f"{node_id}.{n}" for n in sorted(SETTLING_NODE_EVENTS)])
        moment = stopped or ended
        stop_seq = moment.seq if moment is not None else last_seq
        # Just before its own `stopped`: the stop is not among its reasons (a count over
        # the node's own events was decided while it ran).
        moment_seq = stop_seq - 1 if stopped is not None else stop_seq
        stop = _Replay(program, snapshot, moment_seq, artifacts).explain(node.stop)
        if stopped is not None:
            verdict += f"; stopped at seq {stopped.seq}: stopWhen was true"
    return NodeExplanation(
        execution_id=snapshot.execution_id,
        node_id=node_id,
        state=state,
        verdict=verdict,
        start_when=start,
        start_seq=start_seq,
        stop_when=stop,
        stop_seq=stop_seq,
        reason=reason,
    )


def _word(value: Tri) -> str:
    return "unknown" if value is None else str(value).lower()
