"""The graph a pipeline's expressions imply: an edge from each node an expression
references to the node it belongs to, labelled by the event or `vars` (DESIGN.md §9).
"""

from __future__ import annotations

from dataclasses import dataclass

from whenflow.dsl.program import PipelineProgram
from whenflow.dsl.trigger_analysis import condition_node_reads, pattern_sources
from whenflow.dsl.trigger_ast import ConditionAtom, EventAtom, Expr, atoms


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    label: str
    kind: str  # "start" | "stop" | "data"


def _edges_of(expr: Expr, target: str, kind: str, node_ids: tuple[str, ...]) -> list[Edge]:
    edges: list[Edge] = []
    for atom in atoms(expr):
        if isinstance(atom, EventAtom):
            sources = pattern_sources(atom.pattern, node_ids, target)
            if not sources:
                edges.append(Edge(atom.source_glob, target, atom.name_glob, kind))
            edges.extend(Edge(s, target, atom.name_glob, kind) for s in sources)
        elif isinstance(atom, ConditionAtom):
            edges.extend(
                Edge(s, target, "vars", kind)
                for s in sorted(condition_node_reads(atom.source, node_ids, target))
            )
    return edges


def derive_edges(program: PipelineProgram) -> list[Edge]:
    node_ids = program.definition.node_ids
    edges: list[Edge] = []
    seen: set[Edge] = set()
    for node in program.nodes:
        found = _edges_of(node.start, node.id, "start", node_ids)
        if node.stop is not None:
            found += _edges_of(node.stop, node.id, "stop", node_ids)
        for edge in found:
            if edge.source == "pipeline" and edge.label == "started":
                continue
            if edge not in seen:
                seen.add(edge)
                edges.append(edge)
    return edges


def to_mermaid(program: PipelineProgram) -> str:
    lines = ["flowchart TD"]
    for node in program.nodes:
        lines.append(f'    {node.id}["{node.id} ({node.definition.task.type})"]')
    for e in derive_edges(program):
        arrow = "-.->" if e.kind == "stop" else "-->"
        label = f"stop: {e.label}" if e.kind == "stop" else e.label
        lines.append(f"    {_mermaid_id(e.source)} {arrow}|{label}| {e.target}")
    return "\n".join(lines) + "\n"


def _mermaid_id(name: str) -> str:
    return name if name.replace("_", "").isalnum() else '"' + name + '"'


def to_dot(program: PipelineProgram) -> str:
    lines = [f'digraph "{program.definition.name}" {{', "    rankdir=TB;"]
    for node in program.nodes:
        lines.append(
            f'    "{node.id}" [label="{node.id}\\n{node.definition.task.type}" shape=box];'
        )
    for e in derive_edges(program):
        style = " style=dashed" if e.kind == "stop" else ""
        lines.append(f'    "{e.source}" -> "{e.target}" [label="{e.label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"
