"""The `approval` task: a node that waits for a person's decision (DESIGN.md §5).

An approval node runs no executor. When its `startWhen` is true it parks in
`waiting`; someone approves or rejects it (CLI, API), or its `timeout` passes.
This module reads and checks the task block; the engine's `approvals` module
does the waiting.

```yaml
- id: review
  startWhen: event:quality.completed
  timeout: 2h
  inputBindings:
    score: "{{ quality.score }}"       # shown to whoever decides
  task:
    type: approval
    message: "Publish features with score {{ quality.score }}?"
    approvers: [alice, bob]            # optional; anyone when absent
    onTimeout: reject                  # fail (default) | approve | reject
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

APPROVAL_TASK_TYPE = "approval"
APPROVAL_FIELDS = ("message", "approvers", "onTimeout")


class OnTimeout(StrEnum):
    """What an approval's `timeout` does: fail the node, or decide it."""

    FAIL = "fail"
    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    """The checked `task` block of an approval node."""

    approvers: tuple[str, ...] = ()
    on_timeout: OnTimeout = OnTimeout.FAIL

    def may_decide(self, who: str) -> bool:
        return not self.approvers or who in self.approvers


def read_approval(config: Mapping[str, Any]) -> tuple[ApprovalSpec, list[tuple[str, str]]]:
    """The spec of an approval task block and its problems, as (message, field) pairs.

    `message` is a rendered template: `build_program` checks and compiles it
    with the node's other rendered fields.
    """
    problems: list[tuple[str, str]] = []
    for key in config:
        if key not in APPROVAL_FIELDS:
            known = ", ".join(APPROVAL_FIELDS)
            problems.append((f"approval task: unknown field {key!r}; known fields: {known}", key))
    message = config.get("message")
    if message is not None and not isinstance(message, str):
        problems.append(("approval task: `message` must be a string", "message"))
    raw_approvers = config.get("approvers", [])
    approvers: tuple[str, ...] = ()
    if isinstance(raw_approvers, list) and all(isinstance(a, str) and a for a in raw_approvers):
        approvers = tuple(raw_approvers)
    else:
        problems.append(
            ("approval task: `approvers` must be a list of names, e.g. [alice, bob]", "approvers")
        )
    raw_timeout = config.get("onTimeout", OnTimeout.FAIL.value)
    try:
        on_timeout = OnTimeout(raw_timeout)
    except ValueError:
        choices = " | ".join(o.value for o in OnTimeout)
        problems.append((f"approval task: `onTimeout` must be one of {choices}", "onTimeout"))
        on_timeout = OnTimeout.FAIL
    return ApprovalSpec(approvers, on_timeout), problems
