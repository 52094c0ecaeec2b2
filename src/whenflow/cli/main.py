"""The `whenflow` command.

Imports are lazy: `--help`, `validate`, `graph` and `schema` never load the
database layer; `run` loads it only after the definition has been validated.
Every command that shows state takes `--json` (one JSON document on stdout).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from whenflow.cli import (
    connection_commands,
    execution_commands,
    inbox_commands,
    pipeline_commands,
    schedule_commands,
    server_command,
    token_commands,
)
from whenflow.cli.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    ExecutionIdArgument,
    JsonOption,
)
from whenflow.cli.common import fail as _fail
from whenflow.cli.common import query as _query
from whenflow.cli.common import resolve_id as _resolve_id
from whenflow.cli.help_words import WhenflowCommand, WhenflowGroup
from whenflow.cli.output import json_text, print_json

if TYPE_CHECKING:
    from whenflow.cli.progress import Progress
    from whenflow.domain.errors import DefinitionIssue
    from whenflow.dsl.program import PipelineProgram
    from whenflow.engine.runtime import ExecutionResult

app = typer.Typer(
    name="whenflow",
    help="Pipelines whose nodes say when they run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=WhenflowGroup,
)
executions_app = typer.Typer(
    help="Inspect, cancel and retry executions (the local store, or --server's).",
    no_args_is_help=True,
    cls=WhenflowGroup,
)
app.add_typer(executions_app, name="executions")
events_app = typer.Typer(
    help="Send events into running executions.", no_args_is_help=True, cls=WhenflowGroup
)
app.add_typer(events_app, name="events")
tokens_app = typer.Typer(
    help="API tokens of the server's database: create, list, revoke.",
    no_args_is_help=True,
    cls=WhenflowGroup,
)
app.add_typer(tokens_app, name="tokens")
connections_app = typer.Typer(
    help="List and test the connections tasks name (`connection: NAME`).",
    no_args_is_help=True,
    cls=WhenflowGroup,
)
app.add_typer(connections_app, name="connections")
pipelines_app = typer.Typer(
    help="The pipeline registry: push, publish, list, show.",
    no_args_is_help=True,
    cls=WhenflowGroup,
)
app.add_typer(pipelines_app, name="pipelines")
nodes_app = typer.Typer(
    help="Requests to one node of a running execution.", no_args_is_help=True, cls=WhenflowGroup
)
app.add_typer(nodes_app, name="nodes")
schedules_app = typer.Typer(
    help="Schedules of published pipelines: list, pause, resume, next, trigger.",
    no_args_is_help=True,
    cls=WhenflowGroup,
)
app.add_typer(schedules_app, name="schedules")
cycles_app = typer.Typer(
    help="The cycles (fires) of a schedule: list, stop.", no_args_is_help=True, cls=WhenflowGroup
)
app.add_typer(cycles_app, name="cycles")
command = functools.partial(app.command, cls=WhenflowCommand)
pipelines_command = functools.partial(pipelines_app.command, cls=WhenflowCommand)
executions_command = functools.partial(executions_app.command, cls=WhenflowCommand)
events_command = functools.partial(events_app.command, cls=WhenflowCommand)
tokens_command = functools.partial(tokens_app.command, cls=WhenflowCommand)

TasksOption = typer.Option(
    [],
    "--tasks",
    metavar="PATH",
    help="Extra file or folder of `kind: Task` definitions (repeatable).",
)
FileArgument = typer.Argument(metavar="FILE", help="The pipeline YAML file.")


def _show_version(value: bool) -> None:
    if value:
        from whenflow import __version__

        print(f"whenflow {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
    connections: Annotated[
        Path | None,
        typer.Option(
            "--connections",
            metavar="FILE",
            help="The connections file (default: $WHENFLOW_CONNECTIONS_FILE, "
            "else $WHENFLOW_HOME/connections.yaml).",
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            metavar="URL",
            envvar="WHENFLOW_SERVER",
            show_envvar=False,
            help="Go through this whenflow server's API (default: $WHENFLOW_SERVER; "
            "unset: the embedded store).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            envvar="WHENFLOW_TOKEN",
            show_envvar=False,
            help="The server's API token (default: $WHENFLOW_TOKEN).",
        ),
    ] = None,
) -> None:
    """Pipelines whose nodes say when they run."""
    from whenflow.cli.server_client import use_server

    use_server(server, token)
    if connections is not None:
        # Read by services when they build the connections; inherited by nothing
        # else that matters (task subprocesses get no WHENFLOW_CONN_* and this is a path).
        os.environ["WHENFLOW_CONNECTIONS_FILE"] = str(connections.expanduser().resolve())


def _load(file: Path, tasks: list[Path]) -> PipelineProgram:
    """Parse and validate a pipeline; on errors print `file:line:col: ...` and exit 2."""
    from whenflow.domain.errors import DefinitionError
    from whenflow.services.pipelines import load_program

    # Loading builds ~10 objects per YAML value and frees none of them; collecting
    # meanwhile only rescans a growing heap (measured: 10,000 nodes load 2.5x faster).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return load_program(file, task_paths=tasks)
    except DefinitionError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from None
    finally:
        if was_enabled:
            gc.enable()


def _issue_json(issue: DefinitionIssue) -> dict[str, Any]:
    location = issue.location
    return {
        "message": issue.message,
        "field": issue.field,
        "line": location.line if location else None,
        "column": location.column if location else None,
    }


def _exit_code(result: ExecutionResult) -> int:
    return EXIT_OK if result.status.value == "completed" else EXIT_FAILED


def _print_result(result: ExecutionResult, as_json: bool) -> None:
    if as_json:
        print_json(result.to_json())
        return
    from rich.console import Console

    console = Console()
    style = "green" if result.status.value == "completed" else "bold red"
    console.print(f"execution {result.execution_id}: [{style}]{result.status.value}[/]")
    if result.error:
        console.print(f"  error: {result.error}", markup=False)
    for node_id, node in result.nodes.items():
        if node.status.value == "failed":
            console.print(f"  {node_id} failed: {node.error}", markup=False)
    if result.outputs:
        console.print("outputs:", json_text(result.outputs, indent=2), markup=False)


@contextlib.contextmanager
def _stdout_on_stderr() -> Iterator[None]:
    """While a `--json` run runs, file descriptor 1 is stderr's: stdout holds only the result.

    Python tasks' prints already go to their logs; this also keeps out what
    nothing can capture in-process (`os.write(1, ...)`, C extensions, threads
    a task started without its context).
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _execute(
    program: PipelineProgram | None,
    *,
    inputs: dict[str, Any] | None,
    resume_id: str | None,
    as_json: bool,
) -> int:
    import asyncio
    import uuid

    from whenflow.cli.signals import EXIT_TERMINATED, Terminated, run_interruptible
    from whenflow.domain.errors import (
        ExecutionNotFound,
        InputError,
        StoreSettingsError,
        WhenflowError,
    )
    from whenflow.services.executions import ExecutionService

    # Known before anything runs: progress shows it, and so does an interruption.
    execution_id = str(uuid.uuid4()) if resume_id is None else _resolve_id(resume_id)

    async def go(progress: Progress | None) -> ExecutionResult:
        listener = progress.on_event if progress else None
        log_listener = progress.on_log if progress else None
        result: ExecutionResult | None = None
        try:
            async with ExecutionService.open() as service:
                if resume_id is not None:
                    result = await service.resume(
                        execution_id, on_event=listener, on_log=log_listener
                    )
                    return result
                assert program is not None
                result = await service.run(
                    program,
                    inputs or {},
                    on_event=listener,
                    execution_id=execution_id,
                    on_log=log_listener,
                )
                return result
        except asyncio.CancelledError:
            if result is None:
                raise
            return result  # it had ended: Ctrl-C only cut the wait for its notifications

    node_ids = list(program.definition.node_ids) if program else []
    # `whenflow run` is one short-lived process: move what loading built out of the
    # collector's sight, so full collections do not rescan it while thousands of
    # tasks run (measured: keeps a 10,000-node run linear). No `gc.collect()` first:
    # loading leaves no cyclic garbage (imports leave a few hundred objects), and a
    # full collection of the whole heap cost 50-150 ms of every run.
    gc.freeze()
    try:
        if as_json:
            with _stdout_on_stderr():
                result = run_interruptible(go(None))
        else:
            from whenflow.cli.progress import Progress

            with Progress(node_ids, execution_id=execution_id) as progress:
                result = run_interruptible(go(progress))
    except (InputError, StoreSettingsError) as exc:
        _fail(f"error: {exc}", EXIT_INVALID)
    except ExecutionNotFound as exc:
        _fail(f"error: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        _fail(f"interrupted: resume with `whenflow resume {execution_id}`", 130)
    except Terminated:
        _fail(
            f"terminated (SIGTERM): resume with `whenflow resume {execution_id}`", EXIT_TERMINATED
        )
    except WhenflowError as exc:
        _fail(f"error: {exc}", EXIT_FAILED)
    _print_result(result, as_json)
    return _exit_code(result)


@command()
def run(
    file: Annotated[Path | None, FileArgument] = None,
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
    as_json: bool = JsonOption,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="EXECUTION_ID",
            help="Resume this execution (id or unique prefix) instead of starting one.",
        ),
    ] = None,
    tasks: list[Path] = TasksOption,
) -> None:
    """Run a pipeline here, with an embedded SQLite store, and show live progress."""
    from whenflow.cli.inputs import parse_inputs
    from whenflow.domain.errors import InputError

    if resume is not None:
        raise typer.Exit(_execute(None, inputs=None, resume_id=resume, as_json=as_json))
    if file is None:
        _fail("error: give a pipeline file (or --resume EXECUTION_ID)", EXIT_INVALID)
    program = _load(file, tasks)
    try:
        inputs = parse_inputs(input_pairs or [], inputs_file)
    except InputError as exc:
        _fail(f"error: {exc}", EXIT_INVALID)
    raise typer.Exit(_execute(program, inputs=inputs, resume_id=None, as_json=as_json))


@command("resume")
def resume_cmd(
    execution_id: Annotated[str, ExecutionIdArgument], as_json: bool = JsonOption
) -> None:
    """Continue an execution whose process died; completed nodes do not run again."""
    raise typer.Exit(_execute(None, inputs=None, resume_id=execution_id, as_json=as_json))


@command()
def validate(
    file: Annotated[Path, FileArgument], tasks: list[Path] = TasksOption, as_json: bool = JsonOption
) -> None:
    """Check a pipeline; print each node's effective startWhen, or the errors (exit 2)."""
    from whenflow.services.pipelines import upcoming_fires

    program = _load(file, tasks)
    triggers = {n.id: program.effective_start_when(n.id) for n in program.nodes}
    fires = upcoming_fires(program.definition)
    if as_json:
        warnings = [_issue_json(w) for w in program.warnings]
        document = {"valid": True, "pipeline": program.definition.name, "startWhen": triggers}
        print_json({**document, "schedules": fires, "warnings": warnings})
        return
    for warning in program.warnings:
        where = f"{warning.location}: " if warning.location else ""
        print(f"{where}warning: {warning.field}: {warning.message}", file=sys.stderr)
    print(f"{file}: pipeline {program.definition.name} {program.definition.version} is valid")
    width = max(len(n) for n in triggers)
    for node_id, trigger in triggers.items():
        print(f"  {node_id:<{width}}  startWhen: {trigger}")
    for schedule_id, times in fires.items():
        print(f"  schedule {schedule_id}: next fires {', '.join(times) or 'none (ended)'}")


@command()
def graph(
    file: Annotated[Path, FileArgument],
    fmt: str = typer.Option("mermaid", "--format", metavar="mermaid|dot", help="mermaid or dot"),
    tasks: list[Path] = TasksOption,
) -> None:
    """Print the graph the expressions imply, edges labelled by event."""
    from whenflow.dsl.graph import to_dot, to_mermaid

    if fmt not in ("mermaid", "dot"):
        _fail(f"error: --format must be mermaid or dot, not {fmt!r}", EXIT_INVALID)
    program = _load(file, tasks)
    sys.stdout.write(to_mermaid(program) if fmt == "mermaid" else to_dot(program))


@command()
def schema(
    kind: str = typer.Option(
        "all", "--kind", metavar="pipeline|task|all", help="pipeline, task or all"
    ),
) -> None:
    """Print the JSON Schema of definition files, for editors."""
    from whenflow.dsl import json_schema

    makers = {
        "pipeline": json_schema.pipeline_json_schema,
        "task": json_schema.task_json_schema,
        "all": json_schema.definition_json_schema,
    }
    if kind not in makers:
        _fail(f"error: --kind must be one of {', '.join(makers)}", EXIT_INVALID)
    print(json.dumps(makers[kind](), indent=2))


# The registry and starts (cli/pipeline_commands.py); with --server through its API.
pipelines_command("push")(pipeline_commands.pipelines_push)
pipelines_command("publish")(pipeline_commands.pipelines_publish)
pipelines_command("list")(pipeline_commands.pipelines_list)
pipelines_command("show")(pipeline_commands.pipelines_show)
command()(pipeline_commands.start)

# Reading executions (cli/execution_commands.py).
for _name in ("list", "show", "events", "vars", "logs", "retry"):
    executions_command(_name)(getattr(execution_commands, f"executions_{_name}"))

# Requests to a running execution (cli/inbox_commands.py), in the help's order.
command()(inbox_commands.approve)
command()(inbox_commands.reject)
events_command("send")(inbox_commands.events_send)
executions_command("cancel")(inbox_commands.executions_cancel)
nodes_app.command("stop", cls=WhenflowCommand)(inbox_commands.nodes_stop)
connections_app.command("list", cls=WhenflowCommand)(connection_commands.connections_list)
connections_app.command("test", cls=WhenflowCommand)(connection_commands.connections_test)

# The server's API tokens (cli/token_commands.py).
tokens_command("create")(token_commands.tokens_create)
tokens_command("list")(token_commands.tokens_list)
tokens_command("revoke")(token_commands.tokens_revoke)

# Schedules and cycles (cli/schedule_commands.py).
for _name in ("list", "pause", "resume", "next", "trigger"):
    schedules_app.command(_name, cls=WhenflowCommand)(
        getattr(schedule_commands, f"schedules_{_name}")
    )
cycles_app.command("list", cls=WhenflowCommand)(schedule_commands.cycles_list)
cycles_app.command("stop", cls=WhenflowCommand)(schedule_commands.cycles_stop)

command()(server_command.server)


@command()
def explain(execution_id: str, node: str, as_json: bool = JsonOption) -> None:
    """Why a node ran, was skipped or still waits: its triggers, leaf by leaf."""
    execution_id = _resolve_id(execution_id)
    found = _query(lambda s: s.explain(execution_id, node))
    if as_json:
        print_json(found.to_json())
        return
    from whenflow.cli.explain_view import render_explanation

    print(render_explanation(found))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
