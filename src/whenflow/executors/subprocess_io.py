"""Running a child process for a task: stream its output, and kill its whole group.

Shared by the shell executor and the python executor's `isolation: process`.
Every child is started with `start_new_session=True`, so it leads its own
process group and everything it spawns can be signalled at once: on
cancellation the group gets SIGTERM, then SIGKILL after a short grace. When
the child exits normally, whatever it left running in its group is killed
too, since background leftovers would otherwise hold the output pipes open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from whenflow.domain.connections import CONNECTION_ENV_PREFIX
from whenflow.domain.secrets import SECRET_ENV_PREFIX

MAX_LOG_LINE = 64 * 1024
"""Longer output lines are split into pieces of this many bytes."""

DEFAULT_GRACE_S = 2.0
"""Seconds between SIGTERM and SIGKILL, and for output pipes to drain after exit."""


async def read_lines(
    stream: asyncio.StreamReader,
    on_line: Callable[[str], None],
    *,
    max_line: int | None = MAX_LOG_LINE,
) -> None:
    """Call `on_line` for each line of `stream` (without its line ending) until EOF.

    A line longer than `max_line` bytes is delivered in pieces; `None` means no limit.
    Bytes that are not UTF-8 are replaced, never fatal.
    """
    pending = bytearray()
    while chunk := await stream.read(65536):
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            on_line(_decode(pending[start:end]))
            start = end + 1
        del pending[:start]
        while max_line is not None and len(pending) > max_line:
            on_line(_decode(pending[:max_line]))
            del pending[:max_line]
    if pending:
        on_line(_decode(pending))


class TaskProcess:
    """A started child process plus a future that resolves when it exits.

    `asyncio.subprocess.Process.wait()` also waits for the output pipes to
    close, which a leftover background process can hold open forever; the
    `exited` future resolves at the exit itself (the child is already reaped).
    """

    def __init__(self, proc: asyncio.subprocess.Process, exited: asyncio.Future[None]) -> None:
        self.proc = proc
        self._exited = exited

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait_exit(self) -> int:
        """The exit code, once the process has exited and been reaped."""
        await asyncio.shield(self._exited)
        code = self.proc.returncode
        assert code is not None
        return code


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=MAX_LOG_LINE, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def spawn(argv: Sequence[str], **options: Any) -> TaskProcess:
    """Start `argv` in a new session (its own process group); `options` go to subprocess."""
    loop = asyncio.get_running_loop()
    starting = asyncio.ensure_future(
        loop.subprocess_exec(
            lambda: _ExitAwareProtocol(loop), *argv, start_new_session=True, **options
        )
    )
    try:
        transport, protocol = await asyncio.shield(starting)
    except asyncio.CancelledError:
        # Cancelled while the process starts (SIGTERM right after a task began):
        # asyncio would kill the leader only, and its children would run on.
        # Let the start finish, then end the whole group.
        with contextlib.suppress(Exception):
            transport, protocol = await starting
            started = asyncio.subprocess.Process(transport, protocol, loop)
            await terminate_process_group(TaskProcess(started, protocol.exited))
        raise
    return TaskProcess(asyncio.subprocess.Process(transport, protocol, loop), protocol.exited)


async def supervise(
    child: TaskProcess,
    pumps: Sequence[Coroutine[Any, Any, None]],
    *,
    grace_s: float = DEFAULT_GRACE_S,
) -> int:
    """Run `pumps` (stdin feeder, output readers) alongside `child`; return its exit code.

    On cancellation or any error the process group is terminated before the
    exception propagates, so no child outlives its attempt. Output still in the
    pipes `grace_s` after the exit (a daemon that escaped the group) is dropped.
    """
    tasks = [asyncio.ensure_future(pump) for pump in pumps]
    try:
        exit_code = await child.wait_exit()
        signal_group(child.pid, signal.SIGKILL)  # leftovers would hold the pipes open
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
        for task in tasks:
            error = None if not task.done() or task.cancelled() else task.exception()
            if error is not None:
                raise error
        return exit_code
    except BaseException:
        await terminate_process_group(child, grace_s=grace_s)
        raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def terminate_process_group(child: TaskProcess, *, grace_s: float = DEFAULT_GRACE_S) -> None:
    """SIGTERM the group led by `child`, SIGKILL it after `grace_s`; return once it is reaped."""
    try:
        if child.returncode is None:
            signal_group(child.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait_exit(), grace_s)
    finally:
        # Also reached when this cleanup is itself cancelled: never leave the group alive.
        signal_group(child.pid, signal.SIGKILL)
    await child.wait_exit()


def signal_group(pgid: int, signum: signal.Signals) -> None:
    """Send `signum` to a process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def feed_stdin(child: TaskProcess, data: bytes) -> None:
    """Write `data` to the child's stdin and close it; a child that died early is not an error."""
    stdin = child.proc.stdin
    assert stdin is not None
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return
    finally:
        stdin.close()


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").removesuffix("\r")


def task_environment() -> dict[str, str]:
    """This process's environment for a task's subprocess, without the secrets and
    the connections (`WHENFLOW_CONN_*` URLs hold passwords and keys)."""
    hidden = (SECRET_ENV_PREFIX, CONNECTION_ENV_PREFIX)
    return {k: v for k, v in os.environ.items() if not k.startswith(hidden)}
