"""The shell executor against real processes: argv, scripts, env, outputs, kills."""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.errors import TaskError
from whenflow.domain.task_io import TaskRequest
from whenflow.executors.errors import InvalidTaskConfig, ShellCommandFailed
from whenflow.executors.shell import ShellExecutor

TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def ctx(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    recording: ModuleType = importlib.import_module("taskfuncs.recording")
    return recording.RecordingContext()


def shell(inputs: dict[str, Any] | None = None, **config: Any) -> TaskRequest:
    return TaskRequest(
        execution_id="exec-9",
        node_id="step",
        attempt=3,
        task=TaskSpec(type="shell", config=config),
        inputs=inputs or {},
        idempotency_key="exec-9/step",
    )


async def wait_for_exit(pid: int) -> None:
    """Return once process `pid` has terminated (a pidfd becomes readable; no polling)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        async with asyncio.timeout(10):
            await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def test_command_runs_as_argv_and_stdout_goes_to_the_log(ctx: Any) -> None:
    result = await ShellExecutor().execute(
        shell(command=["printf", "%s\\n", "one two", "$HOME"]), ctx
    )
    assert result.outputs == {"exit_code": 0}
    assert ctx.lines("stdout") == ["one two", "$HOME"]


async def test_script_runs_in_bash_with_errexit_and_pipefail(ctx: Any) -> None:
    script = 'echo start\nfalse | cat\necho "never=1" >> "$WF_OUTPUTS"\n'
    with pytest.raises(ShellCommandFailed) as caught:
        await ShellExecutor().execute(shell(script=script), ctx)
    assert caught.value.exit_code == 1
    assert ctx.lines("stdout") == ["start"]


async def test_inputs_and_context_arrive_as_environment_variables(ctx: Any) -> None:
    script = (
        'echo "name=$WF_INPUT_NAME" >> "$WF_OUTPUTS"\n'
        'echo "count=$WF_INPUT_COUNT" >> "$WF_OUTPUTS"\n'
        'echo "items=$WF_INPUT_ITEMS" >> "$WF_OUTPUTS"\n'
        'echo "flag=$WF_INPUT_FLAG" >> "$WF_OUTPUTS"\n'
        'echo "ids=$WF_EXECUTION_ID/$WF_NODE_ID/$WF_ATTEMPT/$WF_IDEMPOTENCY_KEY" >> "$WF_OUTPUTS"\n'
        'echo "item=${WF_ITEM_INDEX-unset}" >> "$WF_OUTPUTS"\n'
        'echo "greeting=$GREETING" >> "$WF_OUTPUTS"\n'
    )
    result = await ShellExecutor().execute(
        shell(
            {"name": "ada", "count": 3, "items": [1, "two"], "flag": False},
            script=script,
            env={"GREETING": "hi there"},
        ),
        ctx,
    )
    assert result.outputs == {
        "name": "ada",
        "count": 3,
        "items": [1, "two"],
        "flag": False,
        "ids": "exec-9/step/3/exec-9/step",
        "item": "unset",
        "greeting": "hi there",
        "exit_code": 0,
    }


async def test_item_index_is_set_for_foreach_items(ctx: Any) -> None:
    request = TaskRequest(
        execution_id="e",
        node_id="n",
        attempt=1,
        task=TaskSpec(type="shell", config={"script": 'echo "i=$WF_ITEM_INDEX" > "$WF_OUTPUTS"'}),
        inputs={},
        idempotency_key="e/n/5",
        item_index=5,
    )
    assert (await ShellExecutor().execute(request, ctx)).outputs == {"i": 5, "exit_code": 0}


@pytest.mark.parametrize(
    "hostile",
    ["{{ 7*7 }}", "$(rm -rf /tmp/whenflow-never)", "`id`; echo pwned", "a\"b'c $HOME ${X:-y}"],
)
async def test_hostile_values_reach_the_process_as_literal_text(
    ctx: Any, hostile: str, tmp_path: Path
) -> None:
    script = 'printf "echo=%s\\n" "$WF_INPUT_VALUE" >> "$WF_OUTPUTS"'
    result = await ShellExecutor().execute(shell({"value": hostile}, script=script), ctx)
    assert result.outputs == {"echo": hostile, "exit_code": 0}
    argv_result = await ShellExecutor().execute(
        shell(command=["printf", "%s", hostile], workdir=str(tmp_path)), ctx
    )
    assert argv_result.outputs == {"exit_code": 0}
    assert ctx.lines("stdout")[-1] == hostile


async def test_a_non_zero_exit_carries_the_stderr_tail(ctx: Any) -> None:
    script = 'for i in $(seq 1 60); do echo "err $i" >&2; done\nexit 7'
    with pytest.raises(ShellCommandFailed) as caught:
        await ShellExecutor().execute(shell(script=script), ctx)
    error = caught.value
    assert isinstance(error, TaskError)
    assert error.exit_code == 7
    assert len(error.stderr_tail) == 50
    assert error.stderr_tail[-1] == "err 60"
    assert "exited with code 7" in str(error)
    assert "err 11\n" in str(error)
    assert "err 10\n" not in str(error)
    assert len(ctx.lines("stderr")) == 60


async def test_output_is_logged_while_the_process_runs(ctx: Any, tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    script = 'echo ready\nread line < "$WF_INPUT_GATE"\necho "got=$line" >> "$WF_OUTPUTS"'
    attempt = asyncio.create_task(
        ShellExecutor().execute(shell({"gate": str(fifo)}, script=script), ctx)
    )
    await ctx.wait_until(lambda: ctx.lines("stdout") == ["ready"])
    assert not attempt.done()
    await asyncio.to_thread(fifo.write_text, "go\n")
    result = await attempt
    assert result.outputs == {"got": "go", "exit_code": 0}


async def test_cancellation_kills_the_whole_process_group(ctx: Any) -> None:
    script = "sleep 1000 &\necho $!\nwait"
    attempt = asyncio.create_task(
        ShellExecutor(terminate_grace_s=5).execute(shell(script=script), ctx)
    )
    await ctx.wait_until(lambda: len(ctx.lines("stdout")) == 1)
    sleeper = int(ctx.lines("stdout")[0])
    os.kill(sleeper, 0)  # running
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    await wait_for_exit(sleeper)


async def test_leftover_background_processes_do_not_hang_the_task(ctx: Any) -> None:
    script = "sleep 1000 &\necho $!"
    result = await ShellExecutor().execute(shell(script=script), ctx)
    assert result.outputs == {"exit_code": 0}
    await wait_for_exit(int(ctx.lines("stdout")[0]))


async def test_workdir_and_missing_programs(ctx: Any, tmp_path: Path) -> None:
    result = await ShellExecutor().execute(
        shell(script='echo "dir=$PWD" > "$WF_OUTPUTS"', workdir=str(tmp_path)), ctx
    )
    assert result.outputs["dir"] == str(tmp_path)
    with pytest.raises(InvalidTaskConfig, match="cannot run 'no-such-program-xyz'"):
        await ShellExecutor().execute(shell(command=["no-such-program-xyz"]), ctx)
    with pytest.raises(InvalidTaskConfig, match="is not a directory"):
        await ShellExecutor().execute(shell(command=["true"], workdir=str(tmp_path / "nope")), ctx)
    with pytest.raises(InvalidTaskConfig, match="give exactly one of"):
        await ShellExecutor().execute(shell(), ctx)


async def test_secrets_of_the_environment_backend_are_not_inherited(
    ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task gets a secret through a binding only, never every WHENFLOW_SECRET_*."""
    monkeypatch.setenv("WHENFLOW_SECRET_API_TOKEN", "inherited-canary")
    monkeypatch.setenv("WHENFLOW_TEST_VISIBLE", "yes")
    await ShellExecutor().execute(shell(command=["env"]), ctx)
    environment = ctx.lines("stdout")
    assert "WHENFLOW_TEST_VISIBLE=yes" in environment
    assert not [line for line in environment if line.startswith("WHENFLOW_SECRET_")]
