"""Secrets read by `{{ secret('NAME') }}` never reach what is stored or shown (DESIGN.md §6, §10).

The pool keeps the real value, so the tasks that bind it get it. Everything
that leaves the dispatcher — events (as published, so listeners and progress
lines see them masked too), variables, node and attempt errors, task logs,
pipeline outputs and results — has every revealed secret replaced by
`***`. With no secret revealed, masking costs one truth test per unit.

A value a template *derives* from a secret is a secret too: when an
evaluation called `secret()` (the `reads` counter moved), the places that
render templates hand its result to `reveal_derived`, which masks its text
forms (`{{ secret('T')[:-1] }}`, `{{ secret('PIN') | float }}`).

A consequence worth knowing: a task output that *contains* a secret is
stored masked, so after a resume its downstream nodes read `***`. Read
secrets with `secret()` where they are needed instead of passing them on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from whenflow.domain.records import (
    AttemptRecorded,
    EventAppended,
    ExecutionCreated,
    ExecutionUpdated,
    LogAppended,
    NodeUpdated,
    Record,
    VariableWritten,
)

MASK = "***"
# Shorter values are not masked: replacing every "1" or "ok" would garble the
# log without protecting anything (the same rule as GitHub Actions' masking).
MIN_MASKED_LENGTH = 4


class SecretMask:
    """The secret values an execution revealed, and the masking of values and records."""

    def __init__(self) -> None:
        self._values: list[str] = []
        self.reads = 0
        """How many secrets were revealed; a template evaluation that moved it read one."""

    def __bool__(self) -> bool:
        return bool(self._values)

    def reveal(self, value: str) -> None:
        self.reads += 1
        # Its JSON-escaped forms too: a task that logs `json.dumps(...)` of a
        # secret with a quote, a backslash or a non-ASCII letter writes those.
        self.reveal_derived(value)

    def reveal_derived(self, value: Any) -> None:
        """Mask what a template computed from a secret: each string, each number's text."""
        for text in _text_forms(value):
            self._add(text)
        self._values.sort(key=len, reverse=True)  # a longer secret first

    def _add(self, value: str) -> None:
        # Each line too: logs arrive a line at a time (a PEM key spans many).
        for part in (value, *value.splitlines()):
            part = part.strip()
            if len(part) >= MIN_MASKED_LENGTH and part not in self._values:
                self._values.append(part)

    def text(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def value(self, value: Any) -> Any:
        """`value` with every string inside it masked (dicts, lists, tuples)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and str(value) in self._values:  # `{{ secret('PIN') | int }}`
            return MASK
        return value

    def optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)

    def records(self, records: Iterable[Record]) -> list[Record]:
        return [self.record(r) for r in records]

    def record(self, record: Record) -> Record:
        if isinstance(record, EventAppended):
            event = record.event
            return EventAppended(replace(event, payload=self.value(dict(event.payload))))
        if isinstance(record, VariableWritten):
            variable = record.variable
            masked = replace(
                variable,
                value=self.value(variable.value),
                metadata=self.value(dict(variable.metadata)),
            )
            return VariableWritten(record.execution_id, masked)
        if isinstance(record, LogAppended):
            return replace(record, message=self.text(record.message))
        if isinstance(record, NodeUpdated):
            return replace(
                record, error=self.optional(record.error), reason=self.optional(record.reason)
            )
        if isinstance(record, AttemptRecorded):
            return replace(record, error_message=self.optional(record.error_message))
        if isinstance(record, ExecutionCreated):  # a child execution's inputs
            return replace(record, inputs=self.value(dict(record.inputs)))
        if isinstance(record, ExecutionUpdated):
            outputs = None if record.outputs is None else self.value(dict(record.outputs))
            return replace(record, outputs=outputs, error=self.optional(record.error))
        return record


def _text_forms(value: Any, depth: int = 0) -> Iterator[str]:
    """The strings under which `value` can be stored or printed."""
    if depth > 20:  # a value deeper than this is not a template's result
        return
    if isinstance(value, str):
        yield value
        for ascii_only in (True, False):  # `json.dumps` with and without ensure_ascii
            quoted = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
            if quoted != value:
                yield quoted
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
        if isinstance(value, float) and value.is_integer():
            yield str(int(value))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _text_forms(key, depth + 1)
            yield from _text_forms(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _text_forms(item, depth + 1)
