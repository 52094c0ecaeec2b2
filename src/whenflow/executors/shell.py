"""The `shell` executor: run an argv or a bash script, with data only in the environment.

    task: {type: shell, command: ["wc", "-l", "data.csv"]}
    task: {type: shell, script: "wc -l < \"$WF_INPUT_PATH\""}

`command` runs without a shell. `script` runs as `bash -e -o pipefail FILE`
with the script text written to FILE exactly as given: it is never rendered
or interpolated (DESIGN.md §10), so data reaches a script only as environment
variables:

- `WF_INPUT_<NAME>_FILE`, the path of a private file holding each input
  (strings as-is, other values as JSON), and `WF_INPUT_<NAME>`, the value
  itself unless it is too large for the environment (`shell_inputs`);
- `WF_EXECUTION_ID`, `WF_NODE_ID`, `WF_ATTEMPT`, `WF_IDEMPOTENCY_KEY`,
  `WF_ITEM_INDEX` (forEach items only);
- `WF_OUTPUTS` and `WF_OUTPUTS_JSON`, empty files where the task sets its
  outputs, and `WF_OUTPUT_DELIMITER`, a random line for the injection-safe
  `name<<DELIMITER` form (`shell_outputs`);
- the task's own `env: {NAME: value}` (rendered by the engine beforehand).

stdout and stderr go to the task log line by line while the process runs. A
non-zero exit raises ShellCommandFailed with the last stderr lines. The
process leads its own group; cancellation kills the whole group.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import tempfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import (
    ExecutorEnvironment,
    TaskContext,
    TaskRequest,
    TaskResult,
    input_variable,
)
from whenflow.executors.errors import InvalidTaskConfig, ShellCommandFailed
from whenflow.executors.shell_inputs import (
    check_argument_sizes,
    prepare_inputs,
    too_long,
)
from whenflow.executors.shell_outputs import merge_outputs, parse_json_outputs, parse_outputs
from whenflow.executors.subprocess_io import (
    DEFAULT_GRACE_S,
    read_lines,
    spawn,
    supervise,
    task_environment,
)

__all__ = ["ShellCommandFailed", "ShellExecutor", "input_variable", "parse_outputs"]

_CONFIG_FIELDS = ("command", "script", "env", "workdir")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STDERR_TAIL_LINES = 50


@dataclass(frozen=True, slots=True)
class _ShellConfig:
    command: tuple[str, ...] | None
    script: str | None
    env: Mapping[str, str]
    workdir: str | None


class ShellExecutor:
    """Runs `shell` tasks as child processes, never through string interpolation."""

    task_type = "shell"

    def __init__(
        self, *, bash: str | None = None, terminate_grace_s: float = DEFAULT_GRACE_S
    ) -> None:
        """
        Args:
            bash: The bash used for `script`; found on PATH when None.
            terminate_grace_s: Seconds a cancelled process group gets between SIGTERM
                and SIGKILL.
        """
        self._bash = bash
        self._grace_s = terminate_grace_s

    def check(self, task: TaskSpec) -> list[str]:
        """Config problems: exactly one of `command`/`script`, well-formed `env` and `workdir`."""
        problems: list[str] = []
        _parse_config(task.config, problems)
        return problems

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Run the process to its end; its WF_OUTPUTS lines plus `exit_code` are the outputs."""
        problems: list[str] = []
        config = _parse_config(request.task.config, problems)
        if problems:
            raise InvalidTaskConfig("shell", "; ".join(problems))
        workdir = _existing_workdir(config.workdir or request.workdir)
        with tempfile.TemporaryDirectory(prefix="whenflow-shell-") as scratch:
            folder = Path(scratch)
            outputs_file = folder / "outputs"
            outputs_file.touch()
            json_file = folder / "outputs.json"
            json_file.touch()
            argv = self._argv(config, folder)
            inputs = prepare_inputs(request.inputs, folder / "inputs")
            for name, size in inputs.files_only:
                ctx.log(
                    f"input {name!r} ({size} bytes) is not in the environment (too large, or it "
                    "holds a NUL byte): "
                    f"read it from ${input_variable(name)}_FILE",
                    stream="log",
                )
            env = _environment(request, config, inputs.env, outputs_file, json_file)
            check_argument_sizes(argv, env)
            exit_code = await self._run(argv, env, workdir, ctx)
            # Bytes, not read_text: universal newlines would turn a value's \r\n into \n.
            outputs = merge_outputs(
                parse_outputs(outputs_file.read_bytes().decode("utf-8", "replace")),
                parse_json_outputs(json_file.read_bytes().decode("utf-8", "replace")),
            )
        outputs["exit_code"] = exit_code
        return TaskResult(outputs=outputs)

    def _argv(self, config: _ShellConfig, scratch: Path) -> list[str]:
        if config.command is not None:
            return list(config.command)
        bash = self._bash or shutil.which("bash")
        if bash is None:
            raise InvalidTaskConfig("shell", "`script` needs bash, which is not on PATH")
        script_file = scratch / "script.sh"
        script_file.write_text(config.script or "", encoding="utf-8")
        return [bash, "-e", "-o", "pipefail", str(script_file)]

    async def _run(
        self, argv: list[str], env: dict[str, str], workdir: str | None, ctx: TaskContext
    ) -> int:
        stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)

        def on_stderr(line: str) -> None:
            stderr_tail.append(line)
            ctx.log(line, stream="stderr")

        try:
            child = await spawn(
                argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                env=env,
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise InvalidTaskConfig(
                "shell", f"cannot run {argv[0]!r}: {exc.strerror}; check the program name and PATH"
            ) from exc
        except ValueError as exc:  # e.g. a NUL byte in an argument or a variable
            raise InvalidTaskConfig("shell", f"cannot start {argv[0]!r}: {exc}") from exc
        except OSError as exc:
            clear = too_long(exc, argv, env)
            if clear is None:
                raise
            raise clear from exc
        assert child.proc.stdout is not None
        assert child.proc.stderr is not None
        exit_code = await supervise(
            child,
            [
                read_lines(child.proc.stdout, lambda line: ctx.log(line, stream="stdout")),
                read_lines(child.proc.stderr, on_stderr),
            ],
            grace_s=self._grace_s,
        )
        if exit_code != 0:
            raise ShellCommandFailed(exit_code, list(stderr_tail))
        return exit_code


def _existing_workdir(workdir: str | None) -> str | None:
    # A local stat: cheap enough to do on the loop, like the scratch files.
    if workdir is not None and not os.path.isdir(workdir):
        raise InvalidTaskConfig("shell", f"workdir {workdir!r} is not a directory")
    return workdir


def _environment(
    request: TaskRequest,
    config: _ShellConfig,
    inputs: Mapping[str, str],
    outputs_file: Path,
    json_file: Path,
) -> dict[str, str]:
    env = {k: v for k, v in task_environment().items() if not k.startswith("WF_")}
    env.update(config.env)
    env.update(inputs)
    env.update(
        {
            "WF_EXECUTION_ID": request.execution_id,
            "WF_NODE_ID": request.node_id,
            "WF_ATTEMPT": str(request.attempt),
            "WF_IDEMPOTENCY_KEY": request.idempotency_key,
            "WF_OUTPUTS": str(outputs_file),
            "WF_OUTPUTS_JSON": str(json_file),
            "WF_OUTPUT_DELIMITER": f"WF_EOF_{secrets.token_hex(16)}",
        }
    )
    if request.item_index is not None:
        env["WF_ITEM_INDEX"] = str(request.item_index)
    else:
        env.pop("WF_ITEM_INDEX", None)  # never inherit one from the engine's own environment
    return env


def _parse_config(config: Mapping[str, Any], problems: list[str]) -> _ShellConfig:
    """Read the task block, appending every problem found to `problems`."""
    for key in config:
        if key not in _CONFIG_FIELDS:
            problems.append(f"unknown field {key!r}; known fields: {', '.join(_CONFIG_FIELDS)}")
    command = config.get("command")
    script = config.get("script")
    if (command is None) == (script is None):
        problems.append("give exactly one of `command` (a list of arguments) or `script` (text)")
    argv: tuple[str, ...] | None = None
    if command is not None:
        if (
            not isinstance(command, list | tuple)
            or not command
            or not all(_is_scalar(item) for item in command)
        ):
            problems.append("`command` must be a non-empty list of strings, e.g. [echo, hi]")
        else:
            argv = tuple(_scalar_text(item) for item in command)
    if script is not None and (not isinstance(script, str) or not script.strip()):
        problems.append("`script` must be non-empty text")
    env: dict[str, str] = {}
    raw_env = config.get("env", {})
    if not isinstance(raw_env, Mapping):
        problems.append("`env` must be a mapping of NAME: value")
    else:
        for name, value in raw_env.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                problems.append(f"env name {name!r} is not a valid variable name")
            elif name.startswith("WF_"):
                problems.append(f"env name {name!r}: the WF_ prefix is reserved for whenflow")
            elif not _is_scalar(value):
                problems.append(f"env {name}: the value must be a string, number or boolean")
            else:
                env[name] = _scalar_text(value)
    workdir = config.get("workdir")
    if workdir is not None and not isinstance(workdir, str):
        problems.append("`workdir` must be a path string")
    return _ShellConfig(
        command=argv,
        script=script if isinstance(script, str) else None,
        env=env,
        workdir=workdir if isinstance(workdir, str) else None,
    )


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def shell_executor(environment: ExecutorEnvironment) -> ShellExecutor:
    """The `shell` entry point of `whenflow.executors`."""
    return ShellExecutor()
