"""`each: "event:<node>.<event>"`: a node run once per custom event of another (DESIGN.md §5).

`check_each` validates the field at load time; `each_start` is the default
`startWhen` of such a node: it starts with the first matching event, or when
the source ends without one (and then completes with `results: []`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from whenflow.domain.definitions import NodeDefinition
from whenflow.dsl.approval import APPROVAL_TASK_TYPE
from whenflow.dsl.node_checks import IssueCollector, unknown_node
from whenflow.dsl.trigger_analysis import is_glob
from whenflow.dsl.trigger_ast import And, ConditionAtom, EventAtom, Expr, Or

EACH_PREFIX = "event:"


def check_each(
    c: IssueCollector,
    node: NodeDefinition,
    node_ids: Collection[str],
    declared: Mapping[str, frozenset[str]],
) -> str | None:
    """The event type an `each:` node consumes (`price.buy_signal`), or None after
    adding the problems to `c` (located at the node's `each`)."""
    text = node.each
    if text is None:
        return None
    problems_before = len(c.issues)
    if node.for_each is not None:
        c.add("a node cannot have both each and forEach; keep one", node.id, "each")
    if node.task.type == APPROVAL_TASK_TYPE:
        c.add("an approval node cannot use each: it waits for one decision", node.id, "each")
    if not text.startswith(EACH_PREFIX):
        c.add(
            f"each must be event:<node>.<event>, e.g. event:price.buy_signal; got {text!r}",
            node.id,
            "each",
        )
        return None
    pattern = text.removeprefix(EACH_PREFIX).strip()
    source, dot, name = pattern.partition(".")
    if not dot or not name or is_glob(pattern) or "." in name:
        c.add(
            f"each must name one event exactly, <node>.<event> (no wildcards); got {text!r}",
            node.id,
            "each",
        )
        return None
    if source == node.id:
        c.add("a node cannot run once per event of its own", node.id, "each")
    elif source not in node_ids:
        c.add(f"each: {unknown_node(source, node_ids)}", node.id, "each")
    elif source in declared and name not in declared[source]:
        listed = ", ".join(sorted(declared[source])) or "none"
        c.add(
            f"each: {source!r} declares no custom event {name!r} (declared: {listed}); "
            f"add it to {source}'s `emits:` or to @whenflow.task(emits=[...])",
            node.id,
            "each",
        )
    return pattern if len(c.issues) == problems_before else None


def each_start(default: Expr, pattern: str) -> Expr:
    """`default && (event:<pattern> || {{ settled('<source>') }})`."""
    source = pattern.partition(".")[0]
    first = Or((EventAtom(pattern), ConditionAtom(f"settled('{source}')")))
    if isinstance(default, And):
        return And((*default.operands, first))
    return And((default, first))
