"""`whenflow pipelines push|publish|list|show` and `whenflow start`: the registry and
starts of published pipelines, through a server (`--server`) or the embedded store.

Embedded, the registry is the one in `$WHENFLOW_HOME` (or `WHENFLOW_DATABASE_URL`),
task code imports from the working directory, and `start` runs the execution here
to its end, as `whenflow run` does. `main` registers these commands.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from whenflow.cli.common import EXIT_FAILED, EXIT_INVALID, EXIT_OK, JsonOption, fail
from whenflow.cli.output import print_json, print_table
from whenflow.cli.server_client import print_execution, server_url, with_client
from whenflow.services.views import registry_version_view

if TYPE_CHECKING:
    from whenflow.services.executions import ExecutionService
    from whenflow.services.registry import RegistryService

_T = TypeVar("_T")

NameArgument = typer.Argument(metavar="NAME", help="The pipeline's name.")
VersionOption = typer.Option(
    "--version", metavar="VERSION", help="A version (default: the latest published)."
)


@asynccontextmanager
async def _embedded() -> AsyncIterator[tuple[ExecutionService, RegistryService]]:
    from whenflow.services.executions import ExecutionService
    from whenflow.services.pipelines import default_runner
    from whenflow.services.registry import RegistryService
    from whenflow.services.server import use_code_path

    use_code_path(Path.cwd())
    runner = default_runner()
    try:
        async with ExecutionService.open(runner=runner) as service:
            yield service, RegistryService(service.store.engine, runner)
    finally:
        runner.close()


def _with_registry(action: Callable[[ExecutionService, RegistryService], Awaitable[_T]]) -> _T:
    """`action(service, registry)` on the embedded store; errors as one line.

    A definition that does not validate prints `file:line:col: message` lines and
    exits 2; a bad store setting exits 2; any other whenflow error exits 1.
    """
    from whenflow.cli.signals import run_interruptible
    from whenflow.domain.errors import (
        DefinitionError,
        InputError,
        StoreSettingsError,
        WhenflowError,
    )

    async def go() -> _T:
        async with _embedded() as (service, registry):
            return await action(service, registry)

    try:
        return run_interruptible(go())
    except DefinitionError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from None
    except (StoreSettingsError, InputError) as exc:
        fail(f"error: {exc}", EXIT_INVALID)
    except WhenflowError as exc:
        fail(f"error: {exc}", EXIT_FAILED)


def _kind() -> Any:
    from whenflow.domain.registry import DefinitionKind

    return DefinitionKind.PIPELINE


def _plural_of(text: str) -> str:
    """`tasks` for a `kind: Task` document, else `pipelines` (the registry then says
    what is wrong with anything else)."""
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return "pipelines"
    is_task = isinstance(document, dict) and document.get("kind") == "Task"
    return "tasks" if is_task else "pipelines"


def pipelines_push(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A pipeline YAML file.")],
    publish: Annotated[
        bool, typer.Option("--publish", help="Publish the version at once (immutable).")
    ] = False,
    as_json: bool = JsonOption,
) -> None:
    """Push a pipeline (or a `kind: Task` definition) to the registry as a draft,
    or publish it with --publish."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"error: cannot read {file}: {exc.strerror or exc}", EXIT_INVALID)
    except UnicodeDecodeError:
        fail(f"error: {file} is not UTF-8 text", EXIT_INVALID)
    plural = _plural_of(text)
    if server_url() is not None:
        pushed = with_client(lambda c: c.push(text, publish=publish, kind=plural))
    else:
        pushed = registry_version_view(_with_registry(lambda _s, r: r.push(text, publish=publish)))
    if as_json:
        print_json(pushed)
    else:
        print(f"{pushed['kind']} {pushed['name']} {pushed['version']}: {pushed['status']}")


def pipelines_publish(
    name: Annotated[str, NameArgument],
    version: Annotated[str, typer.Argument(metavar="VERSION", help="The draft's version.")],
    as_json: bool = JsonOption,
) -> None:
    """Publish a pushed draft: the version becomes immutable and startable."""
    if server_url() is not None:
        done = with_client(lambda c: c.publish(name, version))
    else:
        done = registry_version_view(
            _with_registry(lambda _s, r: r.publish(_kind(), name, version))
        )
    if as_json:
        print_json(done)
    else:
        print(f"{done['kind']} {done['name']} {done['version']}: {done['status']}")


def pipelines_list(as_json: bool = JsonOption) -> None:
    """Every pipeline in the registry: its latest published version, else its latest draft."""
    if server_url() is not None:
        listed = with_client(lambda c: c.pipelines())
    else:
        found = _with_registry(lambda _s, r: r.list(_kind()))
        listed = {"items": [registry_version_view(e) for e in found]}
    if as_json:
        print_json(listed)
        return
    print_table(
        ("pipeline", "version", "status", "description"),
        [(e["name"], e["version"], e["status"], e["description"] or "") for e in listed["items"]],
    )


def pipelines_show(
    name: Annotated[str, NameArgument],
    version: Annotated[str | None, VersionOption] = None,
    as_json: bool = JsonOption,
) -> None:
    """A pipeline's versions, or with --version that version's YAML."""
    if server_url() is not None:
        shown = with_client(lambda c: c.pipeline(name, version))
    elif version is None:
        found = _with_registry(lambda _s, r: r.versions(_kind(), name))
        shown = {"name": name, "versions": [registry_version_view(e) for e in found]}
    else:
        entry, text = _with_registry(lambda _s, r: r.get(_kind(), name, version))
        shown = {**registry_version_view(entry), "yaml": text}
    if as_json:
        print_json(shown)
    elif version is None:
        print_table(
            ("version", "status", "published"),
            [(v["version"], v["status"], v["publishedAt"] or "-") for v in shown["versions"]],
        )
    else:
        sys.stdout.write(shown["yaml"])


def start(
    name: Annotated[str, NameArgument],
    version: Annotated[str | None, VersionOption] = None,
    input_pairs: Annotated[
        list[str] | None,
        typer.Option(
            "-i", "--input", metavar="NAME=VALUE", help="An input as name=value (repeatable)."
        ),
    ] = None,
    inputs_file: Annotated[
        Path | None,
        typer.Option("--inputs-file", metavar="FILE", help="A JSON or YAML file of inputs."),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Follow the execution until it ends; exit 1 unless completed."),
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="Starting again with the same key returns the same execution (--server).",
        ),
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """Start a published pipeline of the registry with inputs.

    With --server it starts on the server (and --wait follows it to its end);
    without, it runs here to its end, as `whenflow run` does.
    """
    from whenflow.cli.inputs import parse_inputs
    from whenflow.domain.errors import InputError

    try:
        inputs = parse_inputs(input_pairs or [], inputs_file)
    except InputError as exc:
        fail(f"error: {exc}", EXIT_INVALID)
    if server_url() is None:
        if idempotency_key is not None:
            fail("error: --idempotency-key needs --server URL", EXIT_INVALID)
        _start_embedded(name, version, inputs, as_json)
        return
    started = with_client(
        lambda c: c.start(name, inputs, version=version, idempotency_key=idempotency_key)
    )
    if not wait:
        if as_json:
            print_json(started)
        else:
            print(f"execution {started['executionId']}: {started['status']}")
        return
    ended = with_client(lambda c: c.wait(started["executionId"]))
    _print_ended(ended, as_json)


def _start_embedded(name: str, version: str | None, inputs: dict[str, Any], as_json: bool) -> None:
    async def go(service: ExecutionService, registry: RegistryService) -> Any:
        program = await registry.program(name, version)
        return await service.run(program, inputs)

    _print_ended(_with_registry(go).to_json(), as_json)


def _print_ended(execution: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(execution)
    else:
        print_execution(execution)
    raise typer.Exit(EXIT_OK if execution.get("status") == "completed" else EXIT_FAILED)
