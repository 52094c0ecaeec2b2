"""From events and terminal nodes to the leaves they can decide (DESIGN.md §4).

The orchestrator never rescans pending nodes: an event touches only the leaves
whose pattern it matches (a dict lookup for exact patterns, one regex per
distinct glob), and a node turning terminal touches only the leaves that
count it down. Each leaf is decided at most once, so a run costs O(N + E).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from fnmatch import translate

from whenflow.domain.events import EXTERNAL_SOURCE, Event
from whenflow.dsl.event_counts import grows_with_events, strict_reads
from whenflow.dsl.trigger_analysis import (
    condition_node_reads,
    is_glob,
    pattern_has_outside_source,
    pattern_sources,
)
from whenflow.engine.trigger_eval import ConditionLeaf, EventLeaf, TriggerTree

Evaluate = Callable[[ConditionLeaf, bool], None]
"""Evaluates a condition leaf; with True, only settles it if it is already true."""


class TriggerIndex:
    def __init__(self, node_ids: Sequence[str], evaluate: Evaluate) -> None:
        self._node_ids = dict.fromkeys(node_ids)
        self._evaluate = evaluate
        self._exact: dict[str, list[EventLeaf]] = {}
        self._globs: dict[str, tuple[re.Pattern[str], list[EventLeaf]]] = {}
        self._event_countdown: dict[str, list[EventLeaf]] = {}
        self._condition_countdown: dict[str, list[ConditionLeaf]] = {}
        self._ready_conditions: list[ConditionLeaf] = []
        self._early_exact: dict[str, list[ConditionLeaf]] = {}
        self._early_globs: dict[str, tuple[re.Pattern[str], list[ConditionLeaf]]] = {}
        self._strict_countdown: dict[str, list[ConditionLeaf]] = {}
        self.external_leaves: dict[str, list[EventLeaf]] = {}

    def register(self, tree: TriggerTree, terminal: Callable[[str], bool]) -> None:
        """Index a tree's leaves; `terminal` says which nodes are already terminal."""
        for leaf in tree.event_leaves:
            pattern = leaf.pattern
            if is_glob(pattern):
                entry = self._globs.get(pattern)
                if entry is None:
                    entry = self._globs[pattern] = (re.compile(translate(pattern)), [])
                entry[1].append(leaf)
            else:
                self._exact.setdefault(pattern, []).append(leaf)
            leaf.outside = pattern_has_outside_source(pattern)
            leaf.source_glob = is_glob(pattern.partition(".")[0])
            leaf.external = leaf.pattern.partition(".")[0] == EXTERNAL_SOURCE
            if leaf.external:
                self.external_leaves.setdefault(tree.owner, []).append(leaf)
            for node_id in pattern_sources(pattern, self._node_ids, tree.owner):
                if not terminal(node_id):
                    leaf.candidates_left += 1
                    self._event_countdown.setdefault(node_id, []).append(leaf)
        for cond in tree.condition_leaves:
            source = cond.template.info.source
            reads = condition_node_reads(source, self._node_ids, tree.owner)
            cond.early = grows_with_events(source)
            strict = strict_reads(source, self._node_ids) if cond.early else frozenset()
            for node_id in reads:
                if not terminal(node_id):
                    cond.deps_left += 1
                    self._condition_countdown.setdefault(node_id, []).append(cond)
                    if node_id in strict:
                        cond.strict_left += 1
                        self._strict_countdown.setdefault(node_id, []).append(cond)
            if cond.deps_left == 0:
                self._ready_conditions.append(cond)
            elif cond.early:
                self._index_early(cond)

    def _index_early(self, cond: ConditionLeaf) -> None:
        """Wake an event-monotone condition at every event it counts."""
        for pattern in cond.template.info.event_patterns:
            if is_glob(pattern):
                entry = self._early_globs.get(pattern)
                if entry is None:
                    entry = self._early_globs[pattern] = (re.compile(translate(pattern)), [])
                entry[1].append(cond)
            else:
                self._early_exact.setdefault(pattern, []).append(cond)

    def _try_early(self, cond: ConditionLeaf) -> None:
        if cond.value is None and cond.deps_left and not cond.strict_left:
            self._evaluate(cond, True)

    def settle_unreferenced(self) -> None:
        """Decide the leaves that nothing can change any more (call after register/replay)."""
        for leaves in (*self._exact.values(), *(e[1] for e in self._globs.values())):
            for leaf in leaves:
                if leaf.value is None and leaf.candidates_left == 0 and not leaf.outside:
                    leaf.settle(False)
        ready, self._ready_conditions = self._ready_conditions, []
        for cond in ready:
            self._evaluate(cond, False)

    def on_event(self, event: Event) -> None:
        """An event was published: the leaves whose pattern matches it become true."""
        leaves = self._exact.get(event.event_type)
        if leaves:
            for leaf in leaves:
                leaf.settle(True)
        if self._globs:
            for regex, glob_leaves in self._globs.values():
                if regex.match(event.event_type):
                    for leaf in glob_leaves:
                        # A glob never matches the node that declares it; an exact
                        # source is never a glob, so this only filters globs.
                        if leaf.tree.owner != event.source or not leaf.source_glob:
                            leaf.settle(True)
        if self._early_exact or self._early_globs:
            for cond in self._early_exact.get(event.event_type, ()):
                self._try_early(cond)
            for regex, conds in self._early_globs.values():
                if regex.match(event.event_type):
                    for cond in conds:
                        self._try_early(cond)

    def on_terminal(self, node_id: str) -> None:
        """A node reached a terminal state: count down the leaves that wait for it."""
        for leaf in self._event_countdown.pop(node_id, ()):
            leaf.candidates_left -= 1
            if leaf.candidates_left == 0 and not leaf.outside and leaf.value is None:
                leaf.settle(False)
        for cond in self._condition_countdown.pop(node_id, ()):
            cond.deps_left -= 1
            if cond.deps_left == 0 and cond.value is None:
                self._evaluate(cond, False)
        for cond in self._strict_countdown.pop(node_id, ()):
            cond.strict_left -= 1
            self._try_early(cond)  # the events it counted so far may already decide it

    def expire_external(self, owner: str) -> None:
        """The owner's `within:` deadline passed: its external events count as never coming."""
        for leaf in self.external_leaves.get(owner, ()):
            if leaf.value is None:
                leaf.settle(False)


def unknown_external(trees: Iterable[TriggerTree]) -> bool:
    """Whether any of these trees still waits on an external event."""
    return any(leaf.external and leaf.value is None for t in trees for leaf in t.event_leaves)
