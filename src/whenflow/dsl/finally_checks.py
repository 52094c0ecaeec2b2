"""Static checks of `finally: true` nodes (DESIGN.md §5, Cleanup).

A finally node starts on `pipeline.ending`, which the engine publishes once
every other node has ended or the execution is ending early; so no node may
wait for one or read its outputs, and only finally nodes see the `ending` scope.
"""

from __future__ import annotations

from collections.abc import Collection

from whenflow.domain.definitions import NodeDefinition
from whenflow.domain.events import PIPELINE_SOURCE
from whenflow.dsl.node_checks import IssueCollector
from whenflow.dsl.templates import ENDING_SCOPE
from whenflow.dsl.trigger_analysis import condition_node_reads, is_glob
from whenflow.dsl.trigger_ast import EventAtom, Expr, atoms

ENDING_EVENT = f"{PIPELINE_SOURCE}.ending"
"""Published when the rest of the execution is done or ending: finally nodes start on it."""
ENDING_ONLY = (
    f"'{ENDING_SCOPE}' is only defined in the bindings, task fields and startWhen "
    "of a node with `finally: true`"
)


def named_nodes(expr: Expr, node_ids: Collection[str], owner: str) -> set[str]:
    """The nodes an expression names itself (an event's exact source, a variable read)."""
    found: set[str] = set()
    for atom in atoms(expr):
        if isinstance(atom, EventAtom):
            source = atom.pattern.partition(".")[0]
            if not is_glob(source) and source in node_ids:
                found.add(source)
        else:
            found.update(condition_node_reads(atom.source, node_ids, owner))
    return found


def check_finally_refs(
    c: IssueCollector, node: NodeDefinition, named: set[str], finally_ids: set[str]
) -> None:
    """No node may wait for, or read, a finally node: finally nodes start last, together."""
    for other in sorted(named & finally_ids - {node.id}):
        if node.is_finally:
            problem = (
                f"finally nodes start together once the rest has ended, so this one cannot "
                f"wait for or read {other!r}; put both steps in one task"
            )
        else:
            problem = (
                f"{other!r} is a finally node: it starts only once every other node has "
                "ended, so this node cannot wait for or read it"
            )
        c.add(problem, node.id, "startWhen" if node.start_when is not None else "inputBindings")
