"""Which events can happen, so a misspelt event name is a load-time error (DESIGN.md §5).

A node publishes its lifecycle events (`started`, `completed`, `failed`...,
plus `waiting`/`approved`/`rejected` for an approval, `item_completed`/
`item_failed` for a forEach node, `child_started`/`child_resumed` for a
sub-pipeline) and the custom events it declares: the node's `emits:` and its
task's (`emits:` of a `kind: Task`, `@whenflow.task(emits=[...])`). An event
pattern (in `event:P` or `events('P')`) that matches none of these, nor a
`pipeline.*` event, nor an `external.*` one, can never happen.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from whenflow.domain.definitions import NodeDefinition, TaskSignature
from whenflow.domain.events import EXTERNAL_SOURCE, PIPELINE_SOURCE
from whenflow.dsl.approval import APPROVAL_TASK_TYPE
from whenflow.dsl.trigger_analysis import is_glob

NODE_LIFECYCLE_EVENTS = frozenset(
    {"started", "completed", "failed", "retrying", "skipped", "stopped", "cancelled"}
)
APPROVAL_EVENTS = frozenset({"waiting", "approved", "rejected"})
FOREACH_EVENTS = frozenset({"item_completed", "item_failed"})
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
    return events


class EventCatalog:
    """Every event type the pipeline's nodes and the pipeline itself can publish."""

    def __init__(self, by_node: Mapping[str, frozenset[str]], unknown: Iterable[str] = ()) -> None:
        """`by_node`: node id → every event name it can publish (lifecycle and declared);
        `unknown`: nodes whose events cannot be known (their definition is invalid and
        already reported), any pattern naming them is let through."""
        self.by_node = by_node
        self._unknown = frozenset(unknown)
        types = {f"{PIPELINE_SOURCE}.{name}" for name in PIPELINE_EVENTS}
        for node_id, names in by_node.items():
            types.update(f"{node_id}.{name}" for name in names)
        self._types = frozenset(types)

    def problem(self, pattern: str, owner: str | None) -> str | None:
        """Why `pattern` can never match an event, or None when it can.

        A glob over sources never matches `owner` (see `trigger_analysis`).
        """
        source, dot, name = pattern.partition(".")
        if not dot or not name:
            return (
                f"event:{pattern} names no event; write <node>.<event>, "
                f"e.g. {source or 'extract'}.completed"
            )
        if source == EXTERNAL_SOURCE or source in self._unknown:
            return None
        if is_glob(source) and any(fnmatchcase(n, source) for n in self._unknown):
            return None
        types = self._types
        if not is_glob(pattern):
            if pattern in types:
                return None
            return f"event:{pattern} can never happen: {self._why_not(source, name)}"
        glob_source = is_glob(source)
        for event_type in types:
            if glob_source and owner is not None and event_type.partition(".")[0] == owner:
                continue
            if fnmatchcase(event_type, pattern):
                return None
        return f"event:{pattern} can never happen: no event of this pipeline matches it"

    def _why_not(self, source: str, name: str) -> str:
        names = PIPELINE_EVENTS if source == PIPELINE_SOURCE else self.by_node.get(source)
        if names is None:
            return f"there is no node {source!r}"
        close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
        hint = f" (did you mean {source}.{close[0]}?)" if close else ""
        custom = "" if source == PIPELINE_SOURCE else "; declare custom events in `emits:`"
        return f"{source!r} never publishes {name!r}{hint}{custom}"


def catalog_of(
    nodes: Iterable[NodeDefinition],
    declared: Mapping[str, frozenset[str]],
    subpipeline_type: str,
    unknown: Iterable[str] = (),
) -> EventCatalog:
    """The catalog of a pipeline, given each node's declared custom events."""
    by_node = {
        n.id: lifecycle_events(n, subpipeline_type) | declared.get(n.id, frozenset()) for n in nodes
    }
    return EventCatalog(by_node, unknown)
