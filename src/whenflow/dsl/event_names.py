"""Which events can happen, so a misspelt event name is a load-time error (DESIGN.md §5).

A node publishes its lifecycle events (`started`, `completed`, `failed`...,
plus `waiting`/`approved`/`rejected` for an approval, `item_completed`/
`item_failed` for a forEach node, those and `item_started` for an `each:`
node, `child_started`/`child_resumed` for a sub-pipeline) and the custom
events it declares: the node's `emits:` and its task's (`emits:` of a
`kind: Task`, `@whenflow.task(emits=[...])`). An event
pattern (in `event:P` or `events('P')`) that matches none of these, nor a
`pipeline.*` event, nor an `external.*` one, can never happen.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from whenflow.domain.definitions import NodeDefinition, TaskSignature
from whenflow.domain.events import EVENT_NAME, EXTERNAL_SOURCE, PIPELINE_SOURCE
from whenflow.dsl.approval import APPROVAL_TASK_TYPE
from whenflow.dsl.trigger_analysis import is_glob

NODE_LIFECYCLE_EVENTS = frozenset(
    {"started", "completed", "failed", "retrying", "skipped", "stopped", "cancelled"}
)
APPROVAL_EVENTS = frozenset({"waiting", "approved", "rejected"})
FOREACH_EVENTS = frozenset({"item_completed", "item_failed"})
EACH_EVENTS = FOREACH_EVENTS | {"item_started"}
SUBPIPELINE_EVENTS = frozenset({"child_started", "child_resumed"})
PIPELINE_EVENTS = frozenset({"started", "completed", "failed", "stopped", "cancelled", "resumed"})


def declared_events(node: NodeDefinition, signature: TaskSignature | None) -> frozenset[str]:
    """The custom events a node may emit: its own `emits:` and its task's."""
    task_events = signature.emits if signature is not None else ()
    return frozenset(node.emits) | frozenset(task_events)


def lifecycle_events(node: NodeDefinition, subpipeline_type: str) -> frozenset[str]:
    """The events the engine publishes for a node of this kind."""
    events = NODE_LIFECYCLE_EVENTS
    if node.task.type == APPROVAL_TASK_TYPE:
        events |= APPROVAL_EVENTS
    elif node.task.type == subpipeline_type:
        events |= SUBPIPELINE_EVENTS
    if node.for_each is not None:
        events |= FOREACH_EVENTS
    if node.each is not None:
        events |= EACH_EVENTS
    return events


class EventCatalog:
    """The events a pipeline's nodes and the pipeline itself can publish.

    Each node's names are computed when a pattern first asks for them: a
    10,000-node pipeline whose triggers name a few nodes pays for those few.
    """

    def __init__(
        self,
        nodes: Mapping[str, NodeDefinition],
        declared: Mapping[str, frozenset[str]],
        subpipeline_type: str,
        unknown: Iterable[str] = (),
    ) -> None:
        """`declared`: node id → its declared custom events; `unknown`: nodes whose
        events cannot be known (their definition is invalid and already reported),
        any pattern naming them is let through."""
        self._nodes = nodes
        self._declared = declared
        self._subpipeline_type = subpipeline_type
        self._unknown = frozenset(unknown)
        self._names: dict[str, frozenset[str]] = {}

    def names(self, source: str) -> frozenset[str] | None:
        """Every event name `source` (a node or `pipeline`) can publish; None if unknown."""
        if source == PIPELINE_SOURCE:
            return PIPELINE_EVENTS
        found = self._names.get(source)
        if found is None:
            node = self._nodes.get(source)
            if node is None:
                return None
            found = lifecycle_events(node, self._subpipeline_type) | self._declared.get(
                source, frozenset()
            )
            self._names[source] = found
        return found

    def problem(self, pattern: str, owner: str | None) -> str | None:
        """Why `pattern` can never match an event, or None when it can.

        A glob over sources never matches `owner` (see `trigger_analysis`).
        """
        source, dot, name = pattern.partition(".")
        if not dot and not is_glob(pattern):
            return (
                f"event:{pattern} names no event; write <node>.<event>, "
                f"e.g. {source or 'extract'}.completed"
            )
        if source == EXTERNAL_SOURCE:
            if is_glob(name) or EVENT_NAME.match(name):
                return None
            # `events send`, the API and the inbox refuse such a name: it never comes.
            return (
                f"event:{pattern} can never happen: an external event's name is lowercase "
                f"letters, digits and _ (like {_external_hint(name)})"
            )
        if source in self._unknown:
            return None
        if is_glob(source) and any(fnmatchcase(n, source) for n in self._unknown):
            return None
        if not is_glob(pattern):
            names = self.names(source)
            if names is not None and name in names:
                return None
            return f"event:{pattern} can never happen: {self._why_not(source, name)}"
        if self._glob_matches(pattern, source, name, owner):
            return None
        return f"event:{pattern} can never happen: no event of this pipeline matches it"

    def _glob_matches(self, pattern: str, source: str, name: str, owner: str | None) -> bool:
        # An event type has exactly one dot (ids and names have none), so a pattern
        # with one dot matches source and name separately; a dotless glob matches whole.
        # A glob source means nodes only, never `pipeline` (trigger_analysis), and
        # never the node that holds the pattern.
        sources: list[str]
        if is_glob(source):
            sources = [n for n in self._nodes if n != owner]
        else:
            sources = [source] if source in self._nodes or source == PIPELINE_SOURCE else []
        for candidate in sources:
            names = self.names(candidate) or frozenset()
            if "." not in pattern:
                if any(fnmatchcase(f"{candidate}.{n}", pattern) for n in names):
                    return True
            elif fnmatchcase(candidate, source) and any(fnmatchcase(n, name) for n in names):
                return True
        return False

    def _why_not(self, source: str, name: str) -> str:
        names = self.names(source)
        if names is None:
            return f"there is no node {source!r}"
        close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
        hint = f" (did you mean {source}.{close[0]}?)" if close else ""
        custom = "" if source == PIPELINE_SOURCE else "; declare custom events in `emits:`"
        return f"{source!r} never publishes {name!r}{hint}{custom}"


def _external_hint(name: str) -> str:
    """`name` spelt as an event name can be: `Deploy-Prod` → `external.deploy_prod`."""
    spelt = re.sub(r"[^a-z0-9_]", "_", name.lower())
    if not spelt or spelt[0].isdigit():
        spelt = "_" + spelt
    return f"{EXTERNAL_SOURCE}.{spelt}"
