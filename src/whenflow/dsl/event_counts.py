"""Conditions that only grow with events, so they can be decided while their source runs.

`{{ events('price.tick') | length >= 3 }}` can only go from false to true as
more `price.tick` events arrive: once true, no later event makes it false. Such
a condition is *event-monotone*, and the engine may settle it true at the third
tick while `price` still runs (DESIGN.md §5, Signals). A condition that could
turn false again (`length < 3`, `length == 3`, a payload read) is decided, as any
other, once every node it reads is terminal.

The check is syntactic and conservative: every `events(...)` call must appear as
`events(P)` (truthy once non-empty) or `events(P) | length` / `| count` compared
with `>=`/`>` (or `<=`/`<` with the count on the right) to a value read without
`events`, combined through `and`, `or` and `not` (which flips the direction).
"""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache

from jinja2 import nodes

from whenflow.dsl.templates import ENV, analyze_expression, desugar_projections

_COUNT_FILTERS = frozenset({"length", "count"})
_GROWING = {"gt": True, "gteq": True, "lt": False, "lteq": False}
_FLIPPED = {"gt": "lt", "gteq": "lteq", "lt": "gt", "lteq": "gteq"}


@lru_cache(maxsize=1024)
def grows_with_events(condition: str) -> bool:
    """Whether `condition` (the inner text of `{{ }}`), once true, stays true as events
    are added; False when it reads no events or cannot be shown to."""
    info = analyze_expression(condition)
    if not info.event_patterns or info.dynamic_events:
        return False
    tree = ENV.parse("{{ " + desugar_projections(condition) + " }}")
    body = tree.body[0] if tree.body else None
    if not isinstance(body, nodes.Output) or len(body.nodes) != 1:
        return False
    return _monotone(body.nodes[0], rising=True)


def strict_reads(condition: str, node_ids: Collection[str]) -> frozenset[str]:
    """The nodes a condition reads other than through constant `events(...)` patterns:
    they must be terminal before even an early evaluation."""
    info = analyze_expression(condition)
    return frozenset(n for n in info.names if n in node_ids)


def _reads_events(node: nodes.Node) -> bool:
    return any(
        isinstance(call.node, nodes.Name) and call.node.name == "events"
        for call in node.find_all(nodes.Call)
    ) or (isinstance(node, nodes.Call) and _is_events_call(node))


def _is_events_call(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "events"
    )


def _is_count(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Filter)
        and node.name in _COUNT_FILTERS
        and not node.args
        and node.node is not None
        and _is_events_call(node.node)
    )


def _monotone(node: nodes.Node, *, rising: bool) -> bool:
    """Whether `node`'s truth moves only in the `rising` direction as events are added."""
    if not _reads_events(node):
        return True
    if isinstance(node, nodes.And | nodes.Or):
        return _monotone(node.left, rising=rising) and _monotone(node.right, rising=rising)
    if isinstance(node, nodes.Not):
        return _monotone(node.node, rising=not rising)
    if _is_events_call(node):
        return rising  # a list that only grows: truthy once non-empty
    if isinstance(node, nodes.Compare) and len(node.ops) == 1:
        left, op, right = node.expr, node.ops[0].op, node.ops[0].expr
        if op not in _GROWING:
            return False
        if _is_count(right) and not _reads_events(left):
            left, right, op = right, left, _FLIPPED[op]
        if _is_count(left) and not _reads_events(right):
            return _GROWING[op] == rising
    return False
