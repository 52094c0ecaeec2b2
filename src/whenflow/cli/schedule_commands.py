"""`whenflow schedules list|pause|resume|next|trigger` and `whenflow cycles list|stop`.

They act on the database `WHENFLOW_DATABASE_URL` names (default: the embedded
one under `$WHENFLOW_HOME`), the one `whenflow server` reads, so a running
server sees a pause or a resume at its next pass (within 30 s). `trigger`
starts the cycle in this process and runs it to its end, like `whenflow run`;
`cycles stop` cancels the cycle's execution through its inbox, applied by the
process that runs it. `main` registers these commands.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from whenflow.cli.common import EXIT_FAILED, EXIT_INVALID, EXIT_OK, JsonOption, fail
from whenflow.cli.output import print_json, print_table

if TYPE_CHECKING:
    from whenflow.services.executions import ExecutionService
    from whenflow.services.schedules import ScheduleService, ScheduleView

_T = TypeVar("_T")

ScheduleArgument = typer.Argument(
    metavar="SCHEDULE", help="A schedule id, <pipeline>:<schedule id> (`whenflow schedules list`)."
)
CycleArgument = typer.Argument(metavar="CYCLE", help="The cycle's number.")


def _with_schedules(action: Callable[[ScheduleService, ExecutionService], Awaitable[_T]]) -> _T:
    """Run `action(schedules, executions)`; a bad store setting exits 2, a whenflow error 1."""
    from whenflow.domain.errors import StoreSettingsError, WhenflowError
    from whenflow.services.executions import ExecutionService
    from whenflow.services.schedules import ScheduleService

    async def go() -> _T:
        async with ExecutionService.open() as service:
            return await action(ScheduleService(service.store.engine), service)

    try:
        return asyncio.run(go())
    except StoreSettingsError as exc:
        fail(f"error: {exc}", EXIT_INVALID)
    except WhenflowError as exc:
        fail(f"error: {exc}", EXIT_FAILED)


def _print_schedules(found: list[ScheduleView]) -> None:
    rows = [
        [
            s.id,
            s.version,
            "paused" if s.paused else "active",
            str(s.cycles),
            s.next[0] if s.next else "-",
        ]
        for s in found
    ]
    print_table(["SCHEDULE", "VERSION", "STATE", "CYCLES", "NEXT"], rows)


def schedules_list(
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", metavar="NAME", help="Only this pipeline's.")
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """The schedules of published pipelines, with their next fire time."""
    found = _with_schedules(lambda s, _: s.list_schedules(pipeline))
    if as_json:
        print_json([s.to_json() for s in found])
        return
    _print_schedules(found)


def schedules_pause(schedule: Annotated[str, ScheduleArgument], as_json: bool = JsonOption) -> None:
    """Pause a schedule: none of its slots fires until it is resumed."""
    view = _with_schedules(lambda s, _: s.pause(schedule))
    if as_json:
        print_json(view.to_json())
        return
    print(f"{view.id}: paused")


def schedules_resume(
    schedule: Annotated[str, ScheduleArgument], as_json: bool = JsonOption
) -> None:
    """Resume a schedule; the slots that passed while it was paused do not fire."""
    view = _with_schedules(lambda s, _: s.resume(schedule))
    if as_json:
        print_json(view.to_json())
        return
    print(f"{view.id}: active, next {view.next[0] if view.next else '-'}")


def schedules_next(
    schedule: Annotated[str, ScheduleArgument],
    count: Annotated[
        int, typer.Option("--count", metavar="N", min=1, max=100, help="How many fire times.")
    ] = 5,
    as_json: bool = JsonOption,
) -> None:
    """The next fire times of a schedule, in its time zone (none while paused)."""
    view = _with_schedules(lambda s, _: s.get(schedule, count=count))
    if as_json:
        print_json(list(view.next))
        return
    for moment in view.next:
        print(moment)
    if view.paused:
        print(f"{view.id} is paused: `whenflow schedules resume {view.id}`", file=sys.stderr)


def schedules_trigger(
    schedule: Annotated[str, ScheduleArgument],
    cycle: Annotated[
        int | None,
        typer.Option(
            "--cycle", metavar="N", min=1, help="Run this past cycle again (its logicalDate)."
        ),
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """Start a cycle now (the next number) and run it here to its end, like `whenflow run`.

    Exits 0 if the execution completed, 1 otherwise; `--json` prints the execution
    object (its `cycle` holds the number). With a server running,
    `POST /api/v1/schedules/{id}/cycles` starts it in the server instead.
    """
    from whenflow.domain.errors import StoreSettingsError, WhenflowError
    from whenflow.services.cycle_runs import run_cycle_here

    try:
        run = asyncio.run(run_cycle_here(schedule, cycle))
    except StoreSettingsError as exc:
        fail(f"error: {exc}", EXIT_INVALID)
    except WhenflowError as exc:
        fail(f"error: {exc}", EXIT_FAILED)
    if run is None:
        fail("error: a cycle was started at this very instant; try again", EXIT_FAILED)
    result = run.result
    status = "not run" if result is None else str(result.status)
    if as_json:
        fallback = {"executionId": run.fired.execution_id, "status": None}
        print_json(fallback if result is None else result.to_json())
    else:
        print(f"cycle {run.fired.cycle}: execution {run.fired.execution_id} {status}")
    raise typer.Exit(EXIT_OK if status == "completed" else EXIT_FAILED)


def cycles_list(
    schedule: Annotated[str, ScheduleArgument],
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, max=500, help="How many, latest first.")
    ] = 50,
    as_json: bool = JsonOption,
) -> None:
    """The cycles of a schedule, latest first, with their executions' status."""
    found = _with_schedules(lambda s, _: s.cycles(schedule, limit=limit))
    if as_json:
        print_json([c.to_json() for c in found])
        return
    rows = [[str(c.cycle), c.logical_date, c.execution_id or "-", c.status or "-"] for c in found]
    print_table(["CYCLE", "LOGICAL DATE", "EXECUTION", "STATUS"], rows)


def cycles_stop(
    schedule: Annotated[str, ScheduleArgument],
    cycle: Annotated[int, CycleArgument],
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why; stored with the cancel.")
    ] = "cycle stopped from the command line",
    wait: Annotated[
        float,
        typer.Option(
            "--wait", metavar="SECONDS", help="Seconds to wait for it to apply (0: don't)."
        ),
    ] = 10.0,
    as_json: bool = JsonOption,
) -> None:
    """Stop a cycle: cancel its execution (through its inbox, applied by the process
    that runs it, a server or `whenflow schedules trigger`)."""
    from whenflow.domain.errors import RequestRefused
    from whenflow.domain.records import MessageKind

    async def stop(schedules: ScheduleService, executions: ExecutionService) -> dict[str, Any]:
        found = await schedules.cycle(schedule, cycle)
        if found.execution_id is None:
            raise RequestRefused(f"cycle {cycle} of {schedule} has no execution any more")
        state = await executions.send(
            found.execution_id, MessageKind.CANCEL, "", {"reason": reason}, wait_s=wait
        )
        return {
            "cycle": cycle,
            "executionId": found.execution_id,
            "messageId": state.message_id,
            "applied": state.applied,
            "refusal": state.refusal,
        }

    outcome = _with_schedules(stop)
    execution_id, refusal = outcome["executionId"], outcome["refusal"]
    if as_json:
        print_json(outcome)
    elif refusal:
        print(f"refused: {refusal}", file=sys.stderr)
    elif outcome["applied"]:
        print(f"cycle {cycle}: execution {execution_id} cancelled")
    else:
        print(
            f"cycle {cycle}: cancel queued as message {outcome['messageId']}; it applies when the "
            f"process running {execution_id} next reads its inbox"
        )
    raise typer.Exit(EXIT_FAILED if refusal else EXIT_OK)
