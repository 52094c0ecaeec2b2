"""Loading pipelines for the CLI and the API: parse, check executors, validate.

Never imports the database layer, so `whenflow validate` stays fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from whenflow.backends.local import LocalRunner
from whenflow.domain.connections import ConnectionResolver
from whenflow.domain.definitions import PipelineDefinition, TaskDefinition, TaskSignature, TaskSpec
from whenflow.domain.schedule_slots import upcoming
from whenflow.dsl.load import load_program_file, load_program_text
from whenflow.dsl.program import PipelineProgram
from whenflow.engine.ports import TaskRunner
from whenflow.executors.registry import default_registry


def default_runner(connections: ConnectionResolver | None = None) -> LocalRunner:
    """A runner with every installed executor, given `connections` (the process's by default)."""
    from whenflow.services.connections import executor_environment

    return LocalRunner(default_registry(executor_environment(connections)))


def add_import_paths(pipeline_path: Path | None) -> None:
    """Let `callable: pkg.mod:fn` find code in the working directory and beside the pipeline."""
    candidates = [Path.cwd()]
    if pipeline_path is not None:
        candidates.append(pipeline_path.resolve().parent)
    for folder in candidates:
        text = str(folder)
        if text not in sys.path:
            sys.path.insert(0, text)


def resolve_signature(task: TaskSpec) -> TaskSignature | None:
    """The typed signature of a `@whenflow.task` python callable, if it is one."""
    if task.type != "python" or not isinstance(task.config.get("callable"), str):
        return None
    from whenflow.executors.callables import prepare_callable

    try:
        return prepare_callable(task.config["callable"]).signature
    except Exception:  # reported by the executor's check() with a better message
        return None


def load_program(
    path: str | Path, *, task_paths: Sequence[str | Path] = (), runner: LocalRunner | None = None
) -> PipelineProgram:
    """Parse and validate a pipeline file; raise DefinitionErrors listing every problem."""
    file = Path(path)
    add_import_paths(file)
    return load_program_file(
        file, runner or default_runner(), task_paths=task_paths, resolve_signature=resolve_signature
    )


def load_stored_program(
    text: str,
    path: str | None,
    *,
    runner: TaskRunner | None = None,
    known_tasks: Mapping[str, TaskDefinition] | None = None,
) -> PipelineProgram:
    """Rebuild the program of a stored execution from the definition text it ran;
    `known_tasks` (`name@version` keys) resolve its `task: {ref: ...}` from a registry."""
    base = Path(path).resolve().parent if path else None
    add_import_paths(Path(path) if path else None)
    return load_program_text(
        text,
        runner or default_runner(),
        path=path or "<stored>",
        base_dir=base,
        resolve_signature=resolve_signature,
        known_tasks=known_tasks,
    )


def upcoming_fires(
    definition: PipelineDefinition, now: float | None = None, count: int = 5
) -> dict[str, list[str]]:
    """The next `count` fire times of each schedule, ISO 8601 in its time zone, by id."""
    moment = time.time() if now is None else now
    return {s.id: [t.isoformat() for t in upcoming(s, moment, count)] for s in definition.schedules}
