"""Checks of a request to a running execution before it is stored (DESIGN.md §7):
the execution has not ended, a decided or stopped node exists and can take it,
an event name is valid and heard. The dispatcher checks again when it applies
the request; these checks make a wrong request fail at once, with a reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from whenflow.domain.definitions import PipelineDefinition
from whenflow.domain.errors import NodeNotFound, RequestRefused, WhenflowError
from whenflow.domain.events import EVENT_NAME
from whenflow.domain.records import MessageKind
from whenflow.domain.states import NodeState
from whenflow.dsl.listeners import external_names, listens_for
from whenflow.services.pipelines import load_stored_program
from whenflow.storage import queries

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


async def check_request(
    engine: AsyncEngine,
    execution_id: str,
    kind: MessageKind,
    target: str = "",
    *,
    force: bool = False,
) -> None:
    """Refuse a request that cannot apply, before it is stored (see `send`).

    Raises:
        ExecutionNotFound: no such execution.
        NodeNotFound: a decision or stop names a node the pipeline lacks.
        RequestRefused: the request cannot apply now; the error says why.
    """
    status = await queries.get_status(engine, execution_id)
    if status.is_terminal:
        raise RequestRefused(f"execution {execution_id} has ended ({status}); nothing to change")
    if kind is MessageKind.STOP:
        await require_node(engine, execution_id, target)
        await _check_stop_target(engine, execution_id, target)
    if kind is MessageKind.APPROVE or kind is MessageKind.REJECT:
        rows = {n.node_id: n for n in await queries.get_nodes(engine, execution_id)}
        row = rows.get(target)
        await _check_decision_target(engine, execution_id, target)
        if row is None or row.state is not NodeState.WAITING:
            now = "has not started" if row is None else f"is {row.state}"
            raise RequestRefused(
                f"node {target!r} of execution {execution_id} {now}, not waiting for a decision"
            )
    if kind is MessageKind.EVENT and not EVENT_NAME.match(target):
        raise RequestRefused(
            f"{target!r} is not an event name: use lowercase letters, digits and _"
        )
    if kind is MessageKind.EVENT and not force:
        await _refuse_unheard(engine, execution_id, target)


async def _refuse_unheard(engine: AsyncEngine, execution_id: str, name: str) -> None:
    """Refuse `external.<name>` when the execution's pipeline never reads it."""
    snapshot = await queries.get_execution(engine, execution_id)
    try:
        program = load_stored_program(snapshot.definition_text, snapshot.definition_path)
    except WhenflowError:
        return  # the pipeline cannot be compiled here: nothing to check against
    if listens_for(program, name):
        return
    names = external_names(program)
    listened = f"it listens for {', '.join(names)}" if names else "it waits for no event"
    raise RequestRefused(
        f"no trigger of execution {execution_id} waits for external.{name} ({listened}); "
        "check the name, or pass --force to publish it anyway"
    )


async def require_node(engine: AsyncEngine, execution_id: str, node_id: str) -> None:
    """Raise ExecutionNotFound or NodeNotFound unless the execution has that node."""
    text, path = await queries.get_definition(engine, execution_id)
    definition = await asyncio.to_thread(_stored_definition, text, path)
    node_ids = definition.node_ids if definition is not None else stated_node_ids(text)
    if node_id not in node_ids:
        raise NodeNotFound(
            f"the pipeline of execution {execution_id} has no node {node_id!r}; "
            f"its nodes: {', '.join(node_ids)}"
        )


async def _check_decision_target(engine: AsyncEngine, execution_id: str, target: str) -> None:
    """Refuse a decision for a node that is not an approval node of the pipeline.

    The refusal names the pipeline's approval nodes, so a typo is easy to fix.
    """
    from whenflow.dsl.approval import APPROVAL_TASK_TYPE

    text, path = await queries.get_definition(engine, execution_id)
    definition = await asyncio.to_thread(_stored_definition, text, path)
    if definition is None:
        return  # the stored text no longer parses here; the generic refusal follows
    approvals = [n.id for n in definition.nodes if n.task.type == APPROVAL_TASK_TYPE]
    if target in approvals:
        return
    listed = ", ".join(approvals) if approvals else "none"
    problem = "is not an approval node" if target in definition.node_ids else "does not exist"
    refusal = RequestRefused if target in definition.node_ids else NodeNotFound
    raise refusal(
        f"node {target!r} {problem} in pipeline {definition.name}; its approval nodes: {listed}"
    )


async def _check_stop_target(engine: AsyncEngine, execution_id: str, target: str) -> None:
    """Refuse to stop a node that has ended (`require_node` checked that it exists)."""
    rows = {n.node_id: n for n in await queries.get_nodes(engine, execution_id)}
    row = rows.get(target)
    if row is not None and row.state.is_terminal:
        raise RequestRefused(
            f"node {target!r} of execution {execution_id} has already ended ({row.state})"
        )


def stated_node_ids(text: str) -> list[str]:
    """The node ids a definition text states, read without compiling it (its task
    references may resolve only against a registry)."""
    from whenflow.domain.errors import DefinitionError
    from whenflow.dsl.yaml_source import load_yaml_documents

    try:
        documents = [d for d, _ in load_yaml_documents(text, "<stored>") if d is not None]
    except DefinitionError:
        return []
    spec = documents[0].get("spec") if documents and isinstance(documents[0], dict) else None
    nodes = spec.get("nodes") if isinstance(spec, dict) else None
    if not isinstance(nodes, list):
        return []
    return [str(n["id"]) for n in nodes if isinstance(n, dict) and "id" in n]


def _stored_definition(text: str, path: str | None) -> PipelineDefinition | None:
    """An execution's definition parsed again (Task files beside it resolved), or None."""
    from whenflow.domain.errors import DefinitionError
    from whenflow.dsl.parse import parse_pipeline_text

    base_dir = Path(path).resolve().parent if path else None
    try:
        return parse_pipeline_text(text, path or "<stored>", base_dir=base_dir).definition
    except DefinitionError:
        return None
