"""The registry on real SQLite and PostgreSQL: drafts, immutable published versions, semver."""

from __future__ import annotations

import asyncio
import hashlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from whenflow.domain.errors import DefinitionErrors
from whenflow.domain.registry import (
    DefinitionKind,
    NotADraft,
    NotInRegistry,
    VersionConflict,
    VersionStatus,
    semver_key,
)
from whenflow.services.pipelines import default_runner
from whenflow.services.registry import RegistryService
from whenflow.storage.database import make_engine, upgrade

TESTS_DIR = str(Path(__file__).resolve().parents[1])  # taskfuncs live there
PIPELINE = DefinitionKind.PIPELINE
TASK = DefinitionKind.TASK


def pipeline(version: str = "1.0.0", command: str = "hello", extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: whenflow/v1
        kind: Pipeline
        metadata: {{name: greet, version: "{version}", description: Says hello}}
        spec:
          nodes:
            - id: say
              task: {{type: shell, command: [echo, "{command}"]}}
        {extra}"""
    )


ADD_TASK = textwrap.dedent(
    """\
    apiVersion: whenflow/v1
    kind: Task
    metadata: {name: add, version: 1.2.0}
    spec:
      type: python
      callable: "taskfuncs:add"
      inputs:
        a: {type: integer, required: true}
        b: {type: integer, required: true}
    """
)

USES_ADD = textwrap.dedent(
    """\
    apiVersion: whenflow/v1
    kind: Pipeline
    metadata: {name: sums, version: 0.1.0}
    spec:
      nodes:
        - id: total
          task: {ref: add@1.2.0}
          inputBindings: {a: 1, b: 2}
    """
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def registry(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RegistryService]:
    monkeypatch.syspath_prepend(TESTS_DIR)
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    else:
        databases: Any = request.getfixturevalue("postgres_databases")
        url = databases.create()
    engine = make_engine(url)
    await upgrade(engine)
    runner = default_runner()
    clock = iter(range(1000, 100_000))
    try:
        yield RegistryService(engine, runner, clock=lambda: float(next(clock)))
    finally:
        runner.close()
        await engine.dispose()


async def test_a_draft_can_be_replaced_until_it_is_published(registry: RegistryService) -> None:
    first = await registry.push(pipeline(command="one"))
    second = await registry.push(pipeline(command="two"))

    assert first.status is VersionStatus.DRAFT
    assert (second.ref, second.description) == ("greet@1.0.0", "Says hello")
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    _, text = await registry.get(PIPELINE, "greet", "1.0.0")
    assert '"two"' in text

    published = await registry.publish(PIPELINE, "greet", "1.0.0")
    assert published.status is VersionStatus.PUBLISHED
    assert published.published_at is not None
    assert (await registry.publish(PIPELINE, "greet", "1.0.0")) == published


async def test_a_published_version_never_changes(registry: RegistryService) -> None:
    published = await registry.push(pipeline(), publish=True)

    again = await registry.push(pipeline(), publish=True)  # a retried push: same body
    with pytest.raises(VersionConflict, match=r"greet@1\.0\.0 is published with another body"):
        await registry.push(pipeline(command="changed"))
    with pytest.raises(NotADraft):
        await registry.delete_draft(PIPELINE, "greet", "1.0.0")

    assert again == published
    _, text = await registry.get(PIPELINE, "greet", "1.0.0")
    assert text == pipeline()


async def test_latest_is_the_highest_published_semver(registry: RegistryService) -> None:
    for version in ("1.2.0", "1.10.0", "1.10.0-rc.1", "1.9.9"):
        await registry.push(pipeline(version), publish=True)
    await registry.push(pipeline("2.0.0"))  # a draft is never "latest"

    entry, _ = await registry.get(PIPELINE, "greet")
    ordered = [v.version for v in await registry.versions(PIPELINE, "greet")]
    listed = await registry.list(PIPELINE)

    assert entry.version == "1.10.0"
    assert ordered == ["2.0.0", "1.10.0", "1.10.0-rc.1", "1.9.9", "1.2.0"]
    assert [(e.name, e.version, e.status) for e in listed] == [
        ("greet", "1.10.0", VersionStatus.PUBLISHED)
    ]


async def test_a_draft_can_be_deleted_and_unknown_names_are_not_found(
    registry: RegistryService,
) -> None:
    await registry.push(pipeline("0.1.0"))
    await registry.delete_draft(PIPELINE, "greet", "0.1.0")

    with pytest.raises(NotInRegistry, match="no pipeline named 'greet'"):
        await registry.versions(PIPELINE, "greet")
    with pytest.raises(NotInRegistry, match=r"no pipeline greet@0\.1\.0"):
        await registry.delete_draft(PIPELINE, "greet", "0.1.0")
    with pytest.raises(NotInRegistry, match="nothing of pipeline 'greet'"):
        await registry.get(PIPELINE, "greet")
    with pytest.raises(NotInRegistry, match="push it first"):
        await registry.publish(PIPELINE, "greet", "9.9.9")


async def test_a_pipeline_may_use_a_published_task_of_the_registry(
    registry: RegistryService,
) -> None:
    with pytest.raises(DefinitionErrors, match=r"add@1\.2\.0"):
        await registry.push(USES_ADD)  # the task is not in the registry yet

    task = await registry.push(ADD_TASK, publish=True)
    entry = await registry.push(USES_ADD, publish=True)
    program = await registry.program("sums")

    assert (task.kind, task.ref) == (TASK, "add@1.2.0")
    assert entry.ref == "sums@0.1.0"
    assert program.by_id["total"].definition.task.config["callable"] == "taskfuncs:add"


async def test_a_push_is_validated_with_locations_before_it_is_stored(
    registry: RegistryService,
) -> None:
    broken_callable = USES_ADD.replace(
        "task: {ref: add@1.2.0}", 'task: {type: python, callable: "taskfuncs:nope"}'
    )
    bad_trigger = pipeline(
        extra='    - {id: late, startWhen: "event:sya.completed", task: {type: noop}}\n'
    )

    with pytest.raises(DefinitionErrors) as missing:
        await registry.push(broken_callable)
    with pytest.raises(DefinitionErrors) as typo:
        await registry.push(bad_trigger)
    with pytest.raises(DefinitionErrors, match="exactly one document"):
        await registry.push(pipeline() + "---\n" + ADD_TASK)

    assert missing.value.issues[0].location is not None
    assert missing.value.issues[0].location.line == 7
    assert "nope" in str(missing.value)
    assert "<pushed>:" in str(typo.value)
    assert await registry.list(PIPELINE) == []


def test_semver_precedence_follows_semver_org() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"]  # fmt: skip
    assert sorted(reversed(ordered), key=semver_key) == ordered
    assert semver_key("1.0.0+build.5") == semver_key("1.0.0")
    with pytest.raises(ValueError, match="not a semantic version"):
        semver_key("1.0")


async def test_concurrent_first_pushes_publish_exactly_one_body(registry: RegistryService) -> None:
    outcomes = await asyncio.gather(
        registry.push(pipeline(command="left"), publish=True),
        registry.push(pipeline(command="right"), publish=True),
        return_exceptions=True,
    )

    conflicts = [o for o in outcomes if isinstance(o, VersionConflict)]
    stored = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(conflicts) == 1, outcomes
    assert len(stored) == 1, outcomes
    _, text = await registry.get(PIPELINE, "greet", "1.0.0")
    assert stored[0].sha256 == hashlib.sha256(text.encode()).hexdigest()
