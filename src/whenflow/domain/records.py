"""Rows the engine hands to the state store, in the order they must become durable.

The engine appends these to an ordered write buffer; the store commits whole
batches, so what is durable is always a prefix of what was appended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from whenflow.domain.events import Event
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.domain.variables import Variable


@dataclass(frozen=True, slots=True)
class ExecutionCreated:
    execution_id: str
    pipeline_name: str
    pipeline_version: str
    definition_text: str
    definition_path: str | None
    inputs: Mapping[str, Any]
    created_at: float
    parent_execution_id: str | None = None
    retry_of: str | None = None
    """The execution this one retries (`POST .../retry`), if any."""


@dataclass(frozen=True, slots=True)
class ExecutionUpdated:
    execution_id: str
    status: ExecutionStatus
    updated_at: float
    finished_at: float | None = None
    outputs: Mapping[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NodeUpdated:
    """The latest state of a node; upserted by (execution_id, node_id)."""

    execution_id: str
    node_id: str
    state: NodeState
    attempts: int
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecorded:
    """One attempt of a node or forEach item; upserted by its key."""

    execution_id: str
    node_id: str
    item_index: int  # -1 when the node has no forEach
    attempt: int
    status: NodeState
    idempotency_key: str
    started_at: float
    finished_at: float | None = None
    error_type: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class EventAppended:
    event: Event


@dataclass(frozen=True, slots=True)
class VariableWritten:
    execution_id: str
    variable: Variable


@dataclass(frozen=True, slots=True)
class LogAppended:
    execution_id: str
    node_id: str
    attempt: int
    item_index: int
    stream: str
    message: str
    at: float


class MessageKind(StrEnum):
    """What someone outside asked a running execution to do (its inbox, DESIGN.md §7)."""

    APPROVE = "approve"
    REJECT = "reject"
    EVENT = "event"
    CANCEL = "cancel"
    STOP = "stop"
    """Stop one node (its target): running attempts end, it becomes `stopped`."""


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """A request from outside the process running an execution, stored before it applies.

    `target` is the node of a decision or the name of an external event;
    `payload` is the event's payload, or `{"by", "comment"}` of a decision,
    or `{"reason"}` of a cancel.
    """

    message_id: int
    execution_id: str
    kind: MessageKind
    target: str
    payload: Mapping[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class InboxApplied:
    """The dispatcher consumed an inbox message; commits with what the message caused.

    `refusal` says why a message changed nothing (the node was no longer
    waiting, the person may not decide it); None when it applied.
    """

    execution_id: str
    message_id: int
    applied_at: float
    refusal: str | None = None


Record = (
    ExecutionCreated
    | ExecutionUpdated
    | NodeUpdated
    | AttemptRecorded
    | EventAppended
    | VariableWritten
    | LogAppended
    | InboxApplied
)


@dataclass(frozen=True, slots=True)
class ExecutionSnapshot:
    """Everything durable about one execution: enough to resume or to show it."""

    execution_id: str
    pipeline_name: str
    pipeline_version: str
    definition_text: str
    definition_path: str | None
    inputs: Mapping[str, Any]
    status: ExecutionStatus
    created_at: float
    finished_at: float | None
    outputs: Mapping[str, Any] | None
    error: str | None
    events: tuple[Event, ...] = ()
    variables: tuple[Variable, ...] = ()
    nodes: tuple[NodeUpdated, ...] = ()
    attempts: tuple[AttemptRecorded, ...] = field(default_factory=tuple)
    retry_of: str | None = None
