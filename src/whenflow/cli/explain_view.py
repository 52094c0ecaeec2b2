"""`whenflow explain` as text: the trigger trees with each leaf's value and deciding events."""

from __future__ import annotations

from whenflow.engine.explain import Explanation, NodeExplanation

_MARK = {True: "true", False: "false", None: "unknown"}


def render_explanation(found: NodeExplanation) -> str:
    """Lines such as `└─ event:a.completed → true (seq 4 a.completed)`."""
    lines = [f"{found.node_id} in execution {found.execution_id}: {found.state}", found.verdict]
    if found.reason:
        lines.append(f"reason: {found.reason}")
    lines.append(f"startWhen (as of seq {found.start_seq}):")
    lines.extend(_tree(found.start_when, "  "))
    if found.stop_when is not None:
        lines.append(f"stopWhen (as of seq {found.stop_seq}):")
        lines.extend(_tree(found.stop_when, "  "))
    return "\n".join(lines)


def _tree(node: Explanation, indent: str) -> list[str]:
    label = node.kind.upper() if node.kind in ("and", "or", "not") else node.source
    deciders = ", ".join(f"seq {d.seq} {d.event_type}" for d in node.decided_by)
    tail = f" ({deciders})" if deciders else ""
    lines = [f"{indent}{label} → {_MARK[node.value]}: {node.reason}{tail}"]
    for i, child in enumerate(node.children):
        last = i == len(node.children) - 1
        branch = "└─ " if last else "├─ "
        sub = _tree(child, "")
        lines.append(f"{indent}{branch}{sub[0]}")
        pad = indent + ("   " if last else "│  ")
        lines.extend(pad + line for line in sub[1:])
    return lines
