"""Static checks of `shell` nodes that need the node, not only its task block.

- Two bindings whose names meet in one environment variable (`a-b`, `a_b` and
  `A.B` all become `WF_INPUT_A_B`; `x_file` meets the `WF_INPUT_X_FILE` of
  `x`): an error, since one value would silently replace the other.
- A template inside the script argument of `sh -c`, `bash -c`, `python -c`...
  turns data into code: a warning that suggests passing the value as an input
  (`$WF_INPUT_<NAME>`). A `{{ }}` in `script:` is never rendered: a warning too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from whenflow.domain.definitions import NodeDefinition
from whenflow.domain.task_io import input_variable

SHELL_TASK_TYPE = "shell"

_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "fish", "busybox")
# Programs whose option (`-c`, `-e`) takes code as its next argument.
_CODE_FLAGS: Mapping[str, str] = {
    **dict.fromkeys(_SHELLS, "c"),
    **dict.fromkeys(("python", "python3", "pwsh", "powershell"), "c"),
    **dict.fromkeys(("perl", "ruby", "node", "nodejs"), "e"),
}
# Options before the code whose value is the next argument (`bash -o pipefail -c CODE`,
# `python3 -W ignore -c CODE`); shells also take `+o NAME`.
_VALUE_FLAGS: Mapping[str, str] = {
    **dict.fromkeys(_SHELLS, "oO"),
    **dict.fromkeys(("python", "python3"), "WX"),
    **dict.fromkeys(("node", "nodejs"), "r"),
}


@dataclass(frozen=True, slots=True)
class ShellFinding:
    """One problem (or warning) and the fields of the node it is about."""

    message: str
    fields: tuple[str | int, ...]


def input_collisions(node: NodeDefinition) -> Iterator[ShellFinding]:
    """Bindings that would set the same `WF_INPUT_<NAME>` variable of a shell task."""
    if node.task.type != SHELL_TASK_TYPE:
        return
    first: dict[str, str] = {}
    for name in node.input_bindings:
        variable = input_variable(name)
        # Each input is also a file, named by `<variable>_FILE` (executors/shell_inputs.py).
        for taken in (variable, variable + "_FILE"):
            other = first.setdefault(taken, name)
            if other != name:
                yield ShellFinding(
                    f"inputs {other!r} and {name!r} both become ${taken}, so one would "
                    "silently replace the other; rename one of them",
                    ("inputBindings", name),
                )
                break


def code_templates(node: NodeDefinition) -> Iterator[ShellFinding]:
    """Templates that would be read as code by an interpreter, or never rendered."""
    if node.task.type != SHELL_TASK_TYPE:
        return
    config = node.task.config
    script = config.get("script")
    if isinstance(script, str) and _has_template(script):
        yield ShellFinding(
            "`script` is never rendered, so this {{ }} reaches bash as literal text; "
            "bind the value in inputBindings and read $WF_INPUT_<NAME> in the script",
            ("task", "script"),
        )
    command = config.get("command")
    if isinstance(command, list):
        for index in _code_arguments(command):
            if _has_template(command[index]):
                yield ShellFinding(
                    f"a template inside the code given to {command[0]!r} turns data into code "
                    "(a value with a quote or `;` runs as a command); bind the value in "
                    'inputBindings and use "$WF_INPUT_<NAME>" in the code instead',
                    ("task", "command", index),
                )


def _has_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _code_arguments(command: list[Any]) -> Iterator[int]:
    """Indexes of the arguments an interpreter runs as code (`sh -c CODE`)."""
    start = 0
    if command and _program(command[0]) == "env":
        start = 1
        while start < len(command) and (
            str(command[start]).startswith("-") or "=" in str(command[start])
        ):
            start += 1
    if start >= len(command):
        return
    program = _program(command[start])
    if program.startswith("python"):
        program = program.rstrip("0123456789.")
    flag = _CODE_FLAGS.get(program)
    if flag is None:
        return
    takes_value = _VALUE_FLAGS.get(program, "")
    prefixes = ("-", "+") if program in _SHELLS else ("-",)
    index = start + 1
    if program == "busybox" and index < len(command):
        index += 1  # busybox sh -c CODE
    while index < len(command):
        arg = str(command[index])
        if not arg.startswith(prefixes) or arg == "--":
            return
        if arg.startswith("--"):
            index += 1
            continue
        if arg.startswith("-") and flag in arg[1:]:
            if index + 1 < len(command):
                yield index + 1
            return
        index += 2 if arg[-1] in takes_value else 1


def _program(value: Any) -> str:
    return os.path.basename(str(value))
