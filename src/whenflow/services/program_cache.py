"""Compiled published pipelines, kept: a start does not parse its YAML again.

A published version never changes (DESIGN.md §11), so its program is compiled
once per process. Drafts are not started: publish them first.
"""

from __future__ import annotations

from whenflow.domain.registry import DefinitionKind, NotInRegistry, VersionStatus
from whenflow.dsl.program import PipelineProgram
from whenflow.services.registry import RegistryService

MAX_PROGRAMS = 1000


class ProgramCache:
    """`get(name, version)` compiles a published pipeline once, then returns it."""

    def __init__(self, registry: RegistryService) -> None:
        self._registry = registry
        self._programs: dict[tuple[str, str], PipelineProgram] = {}

    async def get(self, name: str, version: str | None = None) -> PipelineProgram:
        """The published pipeline `name@version` (default: its latest published version).

        Raises:
            NotInRegistry: no such pipeline or version, or the version is a draft.
            DefinitionErrors: it no longer loads (a task or callable it names is gone).
        """
        if version is not None and (name, version) in self._programs:
            return self._programs[(name, version)]
        entry, _ = await self._registry.get(DefinitionKind.PIPELINE, name, version)
        if entry.status is not VersionStatus.PUBLISHED:
            raise NotInRegistry(f"pipeline {entry.ref} is a draft; publish it before starting it")
        key = (entry.name, entry.version)
        program = self._programs.get(key)
        if program is None:
            program = await self._registry.program(entry.name, entry.version)
            if len(self._programs) >= MAX_PROGRAMS:
                self._programs.pop(next(iter(self._programs)))
            self._programs[key] = program
        return program
