"""Executors as plugins: the `whenflow.executors` entry-point group (DESIGN.md §13).

A distribution adds a task type by being installed. Its pyproject.toml says

    [project.entry-points."whenflow.executors"]
    echo = "whenflow_echo:make_executor"

The entry point's name is the task type; its object is a factory called with
one `ExecutorEnvironment` (connections, settings) that returns an `Executor`
whose `task_type` is that name. whenflow's own executors are declared the
same way in its pyproject.toml; `BUILTIN_EXECUTORS` repeats them so that a
source tree without installed metadata still runs.

A plugin that cannot be loaded (import error, factory error, wrong type, a
name two distributions claim) does not stop whenflow: its task type is
registered as a `BrokenExecutor`, which `whenflow validate` reports and
whose tasks fail, with an `ExecutorPluginError` naming the distribution.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import (
    Executor,
    ExecutorEnvironment,
    TaskContext,
    TaskRequest,
    TaskResult,
)
from whenflow.executors.errors import ExecutorPluginError

ENTRY_POINT_GROUP = "whenflow.executors"
OWN_DISTRIBUTION = "whenflow"
BUILTIN_EXECUTORS: dict[str, str] = {
    "http": "whenflow.executors.http:http_executor",
    "llm": "whenflow.executors.llm:llm_executor",
    "noop": "whenflow.executors.noop:noop_executor",
    "python": "whenflow.executors.python:python_executor",
    "shell": "whenflow.executors.shell:shell_executor",
    "spark": "whenflow.executors.spark:spark_executor",
    "sql": "whenflow.executors.sql:sql_executor",
}
"""The built-in task types, as declared in whenflow's pyproject.toml (a test compares them)."""


@dataclass(frozen=True, slots=True)
class ExecutorSource:
    """Where one task type comes from: `module:factory` of a distribution."""

    name: str
    value: str
    distribution: str
    """`name version` of the distribution that declares it."""

    def load(self) -> Any:
        module_name, _, attribute = self.value.partition(":")
        target: Any = importlib.import_module(module_name.strip())
        for part in filter(None, attribute.strip().split(".")):
            target = getattr(target, part)
        return target


class BrokenExecutor:
    """Stands for a plugin that failed to load: validation reports it, its tasks fail."""

    def __init__(self, error: ExecutorPluginError) -> None:
        self.task_type = error.name
        self.error = error

    def check(self, task: TaskSpec) -> list[str]:
        """The load failure, as the one problem of every task of this type."""
        return [str(self.error)]

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Fail the attempt with the load failure."""
        raise self.error


def discover(entry_points: Iterable[metadata.EntryPoint] | None = None) -> list[ExecutorSource]:
    """The installed executor entry points, then any built-in type none of them declares."""
    found = list(metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else ())
    found.extend(entry_points or ())
    sources = [ExecutorSource(ep.name, ep.value, _distribution(ep)) for ep in found]
    own = {s.name for s in sources if s.distribution.split()[0] == OWN_DISTRIBUTION}
    for name, value in BUILTIN_EXECUTORS.items():
        if name not in own:
            sources.append(ExecutorSource(name, value, f"{OWN_DISTRIBUTION} (built-in)"))
    return sources


def load_executors(
    environment: ExecutorEnvironment, sources: Iterable[ExecutorSource]
) -> Iterator[Executor]:
    """One executor per task type, a BrokenExecutor for each that failed to load."""
    by_name: dict[str, list[ExecutorSource]] = {}
    for source in sources:
        claims = by_name.setdefault(source.name, [])
        if all(c.value != source.value or c.distribution != source.distribution for c in claims):
            claims.append(source)  # a distribution seen twice on sys.path counts once
    for name, claims in by_name.items():
        if len(claims) > 1:
            names = " and ".join(c.distribution for c in claims)
            yield BrokenExecutor(
                ExecutorPluginError(
                    name, names, f"the task type {name!r} is declared by both {names}"
                )
            )
            continue
        yield _load_one(claims[0], environment)


def _load_one(source: ExecutorSource, environment: ExecutorEnvironment) -> Executor:
    def broken(reason: str) -> BrokenExecutor:
        return BrokenExecutor(ExecutorPluginError(source.name, source.distribution, reason))

    try:
        factory = source.load()
    except (Exception, SystemExit) as exc:  # a plugin's sys.exit() must not end whenflow
        return broken(f"cannot import {source.value}: {type(exc).__name__}: {exc}")
    if not callable(factory):
        return broken(f"{source.value} is not callable (a factory taking ExecutorEnvironment)")
    try:
        executor = factory(environment)
    except (Exception, SystemExit) as exc:
        return broken(f"{source.value}(environment) raised {type(exc).__name__}: {exc}")
    missing = [a for a in ("task_type", "check", "execute") if not hasattr(executor, a)]
    if missing:
        return broken(
            f"{source.value} returned a {type(executor).__name__}, which lacks "
            f"{', '.join(missing)}: not an Executor"
        )
    if executor.task_type != source.name:
        return broken(
            f"its executor says task_type {executor.task_type!r}, but the entry point is "
            f"named {source.name!r}; they must be equal"
        )
    return executor  # type: ignore[no-any-return]


def _distribution(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    if dist is None:
        return "an unknown distribution"
    return f"{dist.metadata['Name'] or dist.name} {dist.version}"
