"""How a `shell` task receives its inputs: environment variables and, always, files.

Linux refuses to start a process when one environment string or argument is
over 128 KiB (MAX_ARG_STRLEN) or all of them together are over about 2 MiB
(`Argument list too long`). So every input is written to a private file
(mode 0600, in the attempt's 0700 scratch folder) named by
`WF_INPUT_<NAME>_FILE`, and is also in `WF_INPUT_<NAME>` when it is at most
`INPUT_ENV_LIMIT` bytes, holds no NUL byte (which would end an environment
string) and the inputs' share of the environment (`INPUT_ENV_BUDGET`) has room,
smallest values first. A script that may
receive large values reads the file; the file holds the exact value, UTF-8,
with no newline added. Arguments of `command` and `env` values have no such
way around the limit: one that is too long is an error naming it.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from whenflow.domain.task_io import input_variable
from whenflow.executors.errors import InvalidTaskConfig

INPUT_ENV_LIMIT = 64 * 1024
"""Bytes of one input value that may also go in its environment variable."""
INPUT_ENV_BUDGET = 1024 * 1024
"""Bytes all input variables together may take in the environment."""
MAX_ARG_STRLEN = 128 * 1024
"""Linux's limit on one argument or `NAME=value` string, terminating NUL included."""
FILE_SUFFIX = "_FILE"


@dataclass
class ShellInputs:
    """The environment entries of a task's inputs, and which are in files only."""

    env: dict[str, str] = field(default_factory=dict)
    files_only: list[tuple[str, int]] = field(default_factory=list)
    """(input name, size in bytes) of the values the environment cannot take (too large,
    or holding a NUL byte)."""


def prepare_inputs(
    inputs: Mapping[str, Any],
    folder: Path,
    *,
    env_limit: int = INPUT_ENV_LIMIT,
    env_budget: int = INPUT_ENV_BUDGET,
) -> ShellInputs:
    """Write each input to `folder` and choose which also go in the environment."""
    folder.mkdir(mode=0o700)
    prepared = ShellInputs()
    owners: dict[str, str] = {}
    sized: list[tuple[int, str, str, str]] = []
    for name, value in inputs.items():
        variable = input_variable(name)
        for taken in (variable, variable + FILE_SUFFIX):
            other = owners.setdefault(taken, name)
            if other != name:
                raise InvalidTaskConfig(
                    "shell",
                    f"inputs {other!r} and {name!r} both need ${taken}; rename one of them",
                )
        text = env_text(value)
        data = _encode(name, text)
        path = folder / variable
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        prepared.env[variable + FILE_SUFFIX] = str(path)
        sized.append((len(data), name, variable, text))
    used = 0
    for size, name, variable, text in sorted(sized):
        entry = len(variable) + size + 2  # "NAME=value\0"
        # A NUL byte cannot be in an environment string (it would end it): file only.
        if size <= env_limit and used + entry <= env_budget and "\x00" not in text:
            prepared.env[variable] = text
            used += entry
        else:
            prepared.files_only.append((name, size))
    return prepared


def env_text(value: Any) -> str:
    """An input as the text a process receives: strings as-is, other values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _encode(name: str, text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise InvalidTaskConfig(
            "shell", f"input {name!r} cannot be passed to a process: {exc.reason}"
        ) from None


def check_argument_sizes(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Name the argument or `env` entry over Linux's one-string limit, before spawning."""
    for index, arg in enumerate(argv):
        size = len(arg.encode("utf-8", "surrogateescape")) + 1
        if size > MAX_ARG_STRLEN:
            raise InvalidTaskConfig(
                "shell",
                f"argument {index} of `command` ({arg[:40]!r}...) is {size} bytes, over "
                f"the limit of {MAX_ARG_STRLEN} bytes for one argument; bind the value in "
                "inputBindings and read it from $WF_INPUT_<NAME>_FILE instead",
            )
    for name, value in env.items():
        size = len(name) + len(value.encode("utf-8", "surrogateescape")) + 2
        if size > MAX_ARG_STRLEN:
            raise InvalidTaskConfig(
                "shell",
                f"environment variable {name} is {size} bytes, over the limit of "
                f"{MAX_ARG_STRLEN} bytes for one variable; bind the value in inputBindings "
                "and read it from $WF_INPUT_<NAME>_FILE instead",
            )


def too_long(exc: OSError, argv: Sequence[str], env: Mapping[str, str]) -> InvalidTaskConfig | None:
    """A clear error for `Argument list too long`, naming the largest parts; None otherwise."""
    if exc.errno != errno.E2BIG:
        return None
    args = sum(len(a.encode("utf-8", "surrogateescape")) + 1 for a in argv)
    sizes = sorted(
        ((len(k) + len(v.encode("utf-8", "surrogateescape")) + 2, k) for k, v in env.items()),
        reverse=True,
    )
    largest = ", ".join(f"{name} ({size} bytes)" for size, name in sizes[:3])
    total = args + sum(size for size, _ in sizes)
    return InvalidTaskConfig(
        "shell",
        f"the arguments and environment ({total} bytes; arguments {args} bytes, largest "
        f"variables: {largest}) are over the system's limit for starting a process; "
        "pass large values through inputBindings (read $WF_INPUT_<NAME>_FILE)",
    )
