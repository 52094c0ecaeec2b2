"""The parts of static validation that need no compiled program: where an issue
stands in the file, and the checks of one node at a time (`dsl.program` runs them)."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Protocol

from whenflow.domain.definitions import NodeDefinition, TaskSignature
from whenflow.domain.errors import DefinitionIssue, SourceLocation
from whenflow.dsl.approval import ApprovalSpec, read_approval
from whenflow.dsl.shell_checks import code_templates, input_collisions


class Locator(Protocol):
    """Maps a field of a node (or of the pipeline spec, node_id None) to a file position."""

    def locate(self, node_id: str | None, *fields: str | int) -> SourceLocation | None: ...

    def locate_in(
        self, node_id: str | None, *fields: str | int, offset: int
    ) -> SourceLocation | None: ...


class IssueCollector:
    """Collects located problems and warnings; each names its field as a dotted path."""

    def __init__(self, locator: Locator) -> None:
        self.locator = locator
        self.issues: list[DefinitionIssue] = []
        self.warnings: list[DefinitionIssue] = []

    def _issue(
        self, message: str, node_id: str | None, fields: tuple[str | int, ...], offset: int | None
    ) -> DefinitionIssue:
        if offset is None:
            location = self.locator.locate(node_id, *fields)
        else:
            location = self.locator.locate_in(node_id, *fields, offset=offset)
        prefix = f"nodes.{node_id}" if node_id else "spec"
        path = ".".join([prefix, *(str(f) for f in fields)])
        return DefinitionIssue(message, location, path)

    def add(
        self, message: str, node_id: str | None, *fields: str | int, offset: int | None = None
    ) -> None:
        self.issues.append(self._issue(message, node_id, fields, offset))

    def warn(self, message: str, node_id: str | None, *fields: str | int) -> None:
        self.warnings.append(self._issue(message, node_id, fields, None))


def unknown_node(name: str, node_ids: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(node_ids), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown node {name!r}{hint}"


def check_approval(c: IssueCollector, node: NodeDefinition) -> ApprovalSpec:
    spec, problems = read_approval(node.task.config)
    for message, key in problems:
        c.add(message, node.id, "task", key)
    if node.for_each is not None:
        c.add(
            "an approval node cannot use forEach: it waits for one decision",
            node.id,
            "forEach",
        )
    return spec


def check_signature(
    c: IssueCollector, node: NodeDefinition, signature: TaskSignature | None
) -> None:
    if signature is None:
        return
    for name in node.input_bindings:
        if name not in signature.inputs:
            declared = ", ".join(sorted(signature.inputs)) or "none"
            c.add(
                f"the task declares no input {name!r} (declared: {declared})",
                node.id,
                "inputBindings",
                name,
            )
    for name, spec in signature.inputs.items():
        if spec.required and spec.default is None and name not in node.input_bindings:
            c.add(f"required input {name!r} ({spec.type}) is not bound", node.id, "inputBindings")


def find_cycle(edges: Mapping[str, frozenset[str]], order: Iterable[str]) -> list[str] | None:
    """The first cycle a depth-first walk in `order` meets, as `[a, b, ..., a]`.

    Iterative: a chain deeper than Python's recursion limit (1,000 nodes listed
    last-first) must not crash, and a recursive closure would also leave a
    reference cycle holding `edges` for the collector.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []  # the current path
    successors: list[Iterator[str]] = []  # per node on the path, the edges left to walk
    for root in order:
        if root in state:
            continue
        state[root] = 1
        stack.append(root)
        successors.append(iter(sorted(edges.get(root, ()))))
        while successors:
            for m in successors[-1]:
                if state.get(m) == 1:
                    return [*stack[stack.index(m) :], m]
                if m not in state:
                    state[m] = 1
                    stack.append(m)
                    successors.append(iter(sorted(edges.get(m, ()))))
                    break
            else:
                successors.pop()
                state[stack.pop()] = 2
    return None


def check_shell_node(c: IssueCollector, node: NodeDefinition) -> None:
    for finding in input_collisions(node):
        c.add(finding.message, node.id, *finding.fields)
    for finding in code_templates(node):
        c.warn(finding.message, node.id, *finding.fields)
