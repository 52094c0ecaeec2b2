"""The registry's use cases: push, publish, read and delete stored definitions (DESIGN.md §11).

A push validates the definition the way `whenflow validate` does (the python
callables it names must import from the server's code path) before anything is
stored, so the registry only ever holds definitions that load.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from whenflow.backends.local import LocalRunner
from whenflow.domain.definitions import TaskDefinition
from whenflow.domain.errors import DefinitionErrors, DefinitionIssue, SourceLocation
from whenflow.domain.registry import (
    DefinitionKind,
    NotADraft,
    NotInRegistry,
    RegistryVersion,
    VersionConflict,
    VersionStatus,
    semver_key,
)
from whenflow.dsl.convert import document_from_data, task_from_document
from whenflow.dsl.load import load_program_text
from whenflow.dsl.program import PipelineProgram
from whenflow.dsl.schema import TaskDocument
from whenflow.dsl.yaml_source import load_yaml_documents
from whenflow.services.pipelines import resolve_signature
from whenflow.storage import registry as rows

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

PUSHED_PATH = "<pushed>"
"""The file name that locations in a pushed definition's errors show."""


class RegistryService:
    """Stored pipelines and task definitions; `engine` is the server's database."""

    def __init__(
        self, engine: AsyncEngine, runner: LocalRunner, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._runner = runner
        self._clock = clock
        self.on_published: Callable[[str], Awaitable[None]] | None = None
        """Awaited with a pipeline's name after one of its versions is published (or
        pushed again as published): the server syncs its schedules (DESIGN.md §12)."""

    async def push(
        self, text: str, *, publish: bool = False, kind: DefinitionKind | None = None
    ) -> RegistryVersion:
        """Validate and store one `kind: Pipeline` or `kind: Task` document as a draft.

        With `publish`, the version is published in the same transaction. A
        published version pushed again with the same text is returned as it is.
        With `kind`, a document of the other kind is refused (located).

        Raises:
            DefinitionErrors: the text is not one valid definition (located).
            VersionConflict: that version is published with another body.
        """
        found, name, version, description = await self._validate(text, kind)
        kind = found
        digest = hashlib.sha256(text.encode()).hexdigest()
        for _ in range(3):  # lost a race with a concurrent push of this version: read again
            try:
                stored = await self._store(kind, name, version, description, text, digest, publish)
            except IntegrityError:
                continue
            if stored is not None:
                if stored.status is VersionStatus.PUBLISHED:
                    await self._published(kind, name)
                return stored
        raise VersionConflict(f"{kind} {name}@{version} is being pushed concurrently; retry")

    async def _store(
        self,
        kind: DefinitionKind,
        name: str,
        version: str,
        description: str,
        text: str,
        digest: str,
        publish: bool,
    ) -> RegistryVersion | None:
        """One attempt at storing; None when a concurrent publish won the race."""
        now = self._clock()
        async with self._engine.begin() as conn:
            found = await rows.find(conn, kind, name, version)
            entry = RegistryVersion(
                kind, name, version, VersionStatus.DRAFT, digest, description, now, now
            )
            if found is None:
                if publish:
                    entry = _published(entry, now)
                await rows.insert(conn, entry, text)
                return entry
            existing, _ = found
            if existing.status is VersionStatus.PUBLISHED:
                if existing.sha256 == digest:
                    return existing
                raise VersionConflict(
                    f"{kind} {name}@{version} is published with another body; "
                    "a published version never changes: push it as a new version"
                )
            entry = RegistryVersion(
                kind, name, version, VersionStatus.DRAFT, digest, description,
                existing.created_at, now,
            )  # fmt: skip
            if not await rows.replace_draft(conn, entry, text):
                return None
            if publish:
                await rows.publish(conn, kind, name, version, now)
                entry = _published(entry, now)
            return entry

    async def publish(self, kind: DefinitionKind, name: str, version: str) -> RegistryVersion:
        """Publish a draft; publishing a published version again returns it unchanged.

        Raises:
            NotInRegistry: no such version.
        """
        now = self._clock()
        async with self._engine.begin() as conn:
            await rows.publish(conn, kind, name, version, now)
            found = await rows.find(conn, kind, name, version)
        if found is None:
            raise NotInRegistry(f"no {kind} {name}@{version} in the registry; push it first")
        await self._published(kind, name)
        return found[0]

    async def _published(self, kind: DefinitionKind, name: str) -> None:
        if kind is DefinitionKind.PIPELINE and self.on_published is not None:
            await self.on_published(name)

    async def get(
        self, kind: DefinitionKind, name: str, version: str | None = None
    ) -> tuple[RegistryVersion, str]:
        """One version and its text; without `version`, the latest published one.

        Raises:
            NotInRegistry: no such definition, version, or no published version.
        """
        async with self._engine.connect() as conn:
            if version is None:
                version = _latest_published(await rows.versions(conn, kind, name), kind, name)
            found = await rows.find(conn, kind, name, version)
        if found is None:
            raise NotInRegistry(f"no {kind} {name}@{version} in the registry")
        return found

    async def versions(self, kind: DefinitionKind, name: str) -> list[RegistryVersion]:
        """Every version of one definition, newest (by semver) first.

        Raises:
            NotInRegistry: the registry has no definition of that name.
        """
        async with self._engine.connect() as conn:
            found = await rows.versions(conn, kind, name)
        if not found:
            raise NotInRegistry(f"no {kind} named {name!r} in the registry")
        return sorted(found, key=lambda v: semver_key(v.version), reverse=True)

    async def list(self, kind: DefinitionKind) -> list[RegistryVersion]:
        """One row per definition name: its latest published version, else its latest draft."""
        async with self._engine.connect() as conn:
            found = await rows.versions(conn, kind)
        best: dict[str, RegistryVersion] = {}
        for entry in found:
            current = best.get(entry.name)
            if current is None or _rank(entry) > _rank(current):
                best[entry.name] = entry
        return [best[name] for name in sorted(best)]

    async def delete_draft(self, kind: DefinitionKind, name: str, version: str) -> None:
        """Delete a draft version.

        Raises:
            NotInRegistry: no such version.
            NotADraft: the version is published, and published versions stay.
        """
        async with self._engine.begin() as conn:
            if await rows.delete_draft(conn, kind, name, version):
                return
            found = await rows.find(conn, kind, name, version)
        if found is None:
            raise NotInRegistry(f"no {kind} {name}@{version} in the registry")
        raise NotADraft(f"{kind} {name}@{version} is published; published versions are kept")

    async def program(self, name: str, version: str | None = None) -> PipelineProgram:
        """The compiled pipeline `name@version` (default: latest published), to start it.

        Raises:
            NotInRegistry: no such pipeline or version.
            DefinitionErrors: it no longer loads (a task or callable it names is gone).
        """
        entry, text = await self.get(DefinitionKind.PIPELINE, name, version)
        return load_program_text(
            text,
            self._runner,
            path=f"{entry.ref}.yaml",
            resolve_signature=resolve_signature,
            known_tasks=await self.published_tasks(),
        )

    async def published_tasks(self) -> dict[str, TaskDefinition]:
        """Every published `kind: Task` definition, keyed by `name@version`."""
        async with self._engine.connect() as conn:
            texts = await rows.published_texts(conn, DefinitionKind.TASK)
        tasks: dict[str, TaskDefinition] = {}
        for ref, text in texts:
            definition = _task_document(text, ref)
            tasks[definition.ref] = definition
        return tasks

    async def _validate(
        self, text: str, expected: DefinitionKind | None = None
    ) -> tuple[DefinitionKind, str, str, str]:
        """Parse and check `text` in a worker thread: a large or hostile document
        does not stall the executions on the loop."""
        tasks = await self.published_tasks()
        try:
            return await asyncio.to_thread(self._validate_text, text, expected, tasks)
        except RecursionError:
            raise DefinitionErrors(
                [
                    DefinitionIssue(
                        "the document is nested too deeply to read",
                        SourceLocation(PUSHED_PATH, 1, 1),
                    )
                ]
            ) from None

    def _validate_text(
        self, text: str, expected: DefinitionKind | None, tasks: dict[str, TaskDefinition]
    ) -> tuple[DefinitionKind, str, str, str]:
        documents = [d for d in load_yaml_documents(text, PUSHED_PATH) if d[0] is not None]
        kinds = [data.get("kind") if isinstance(data, dict) else None for data, _ in documents]
        wanted = {DefinitionKind.PIPELINE: "Pipeline", DefinitionKind.TASK: "Task"}
        if expected is not None and len(documents) == 1 and kinds[0] != wanted[expected]:
            raise DefinitionErrors(
                [
                    DefinitionIssue(
                        f"expected `kind: {wanted[expected]}` here, found {kinds[0]!r}",
                        documents[0][1].locate(("kind",)),
                        "kind",
                    )
                ]
            )
        if len(documents) != 1 or kinds[0] not in ("Pipeline", "Task"):
            where = documents[1][1].locate(()) if len(documents) > 1 else None
            raise DefinitionErrors(
                [
                    DefinitionIssue(
                        "push exactly one document of `kind: Pipeline` or `kind: Task`",
                        where or SourceLocation(PUSHED_PATH, 1, 1),
                        "kind",
                    )
                ]
            )
        if kinds[0] == "Task":
            definition = _task_document(text, PUSHED_PATH)
            problems = self._runner.check(definition.task)
            if problems:
                where = documents[0][1].locate(("spec",))
                raise DefinitionErrors([DefinitionIssue(p, where, "spec") for p in problems])
            return DefinitionKind.TASK, definition.name, definition.version, definition.description
        program = load_program_text(
            text,
            self._runner,
            path=PUSHED_PATH,
            resolve_signature=resolve_signature,
            known_tasks=tasks,
        )
        d = program.definition
        return DefinitionKind.PIPELINE, d.name, d.version, d.description


def _task_document(text: str, path: str) -> TaskDefinition:
    data, source = next(d for d in load_yaml_documents(text, path) if d[0] is not None)
    document = document_from_data(data, source)
    assert isinstance(document, TaskDocument)
    return task_from_document(document)


def _published(entry: RegistryVersion, now: float) -> RegistryVersion:
    return RegistryVersion(
        entry.kind, entry.name, entry.version, VersionStatus.PUBLISHED, entry.sha256,
        entry.description, entry.created_at, now, now,
    )  # fmt: skip


def _rank(entry: RegistryVersion) -> tuple[bool, object]:
    return (entry.status is VersionStatus.PUBLISHED, semver_key(entry.version))


def _latest_published(found: list[RegistryVersion], kind: DefinitionKind, name: str) -> str:
    published = [v for v in found if v.status is VersionStatus.PUBLISHED]
    if not published:
        what = "no published version" if found else "nothing"
        raise NotInRegistry(f"the registry has {what} of {kind} {name!r}")
    return max(published, key=lambda v: semver_key(v.version)).version
