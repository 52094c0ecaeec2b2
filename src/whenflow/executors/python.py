"""The `python` executor: call `package.module:function` with the node's inputs.

    task: {type: python, callable: examples.features:extract, isolation: thread}

Where the call runs:

- an `async def` function is awaited on the engine's loop (in its own asyncio
  task: one that swallows its cancellation runs on, its attempt ends anyway);
- a plain function runs in this executor's thread pool, so it never blocks the
  loop (a thread cannot be killed: on cancellation the attempt ends at once,
  but the function runs on to its end in the background, and the node's next
  attempt waits for it: `lingering_threads`);
- `isolation: process` runs either kind in a fresh child Python
  (`whenflow.executors.python_child`), killed with its process group on
  cancellation. Only JSON crosses that boundary; an exception in the child
  fails the attempt under the child's exception type name and message.

What an in-process function prints (`print`, `sys.stdout`/`sys.stderr`,
`logging` to them) goes to its attempt's log (`task_output`). What it raises
fails the attempt under its own type name, its traceback (the task's frames)
logged on `stderr`; a `SystemExit`, `KeyboardInterrupt` or other
`BaseException`, and a `StopIteration`, are rebuilt as a `TaskRaised` of that
name, since they must not reach the engine's loop.

The function gets the inputs as keyword arguments and, if it has a parameter
named `ctx`, the TaskContext. It returns a dict of outputs (None means none);
`@whenflow.task` functions with a non-dict return annotation have their return
value stored as the output `result`.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.errors import WhenflowError, interrupted_by_user, task_raised
from whenflow.domain.task_io import ExecutorEnvironment, TaskContext, TaskRequest, TaskResult
from whenflow.executors import python_child, task_output
from whenflow.executors.callables import (
    PreparedCallable,
    cached_callable,
    prepare_callable,
    resolve_callable,
    signature_of,
)
from whenflow.executors.errors import (
    CallableNotFound,
    ChildProcessDied,
    InvalidTaskConfig,
    isolated_error,
)
from whenflow.executors.lingering_threads import LingeringThreads, ThreadCall
from whenflow.executors.subprocess_io import (
    DEFAULT_GRACE_S,
    feed_stdin,
    read_lines,
    spawn,
    supervise,
    task_environment,
)
from whenflow.executors.task_threads import RaisedInThread, TaskThreads
from whenflow.executors.tracebacks import task_traceback

__all__ = ["PythonExecutor", "resolve_callable", "signature_of"]

ISOLATIONS = ("thread", "process")
_CONFIG_FIELDS = ("callable", "isolation")
_STDERR_TAIL_LINES = 50


class PythonExecutor:
    """Runs `python` tasks: on the loop, in a thread pool, or in a child process."""

    task_type = "python"

    def __init__(
        self, *, max_threads: int | None = None, terminate_grace_s: float = DEFAULT_GRACE_S
    ) -> None:
        """
        Args:
            max_threads: Size of the pool for sync functions; Python's default when None.
            terminate_grace_s: Seconds a cancelled child process gets between SIGTERM
                and SIGKILL.
        """
        self._max_threads = max_threads
        self._grace_s = terminate_grace_s
        self._pool: TaskThreads | None = None
        self._capturing = False
        self._lingering = LingeringThreads()

    def check(self, task: TaskSpec) -> list[str]:
        """Config problems, importing the callable to prove it exists."""
        problems = [
            f"python task: unknown field {key!r}; known fields: {', '.join(_CONFIG_FIELDS)}"
            for key in task.config
            if key not in _CONFIG_FIELDS
        ]
        try:
            spec, _ = _read_config(task)
            prepare_callable(spec)
        except InvalidTaskConfig as exc:
            problems.append(str(exc))
        return problems

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Call the function once with the request's inputs; raise what it raises."""
        spec, isolation = _read_config(request.task)
        if isolation == "process":
            return TaskResult(outputs=await self._run_in_child(spec, request, ctx))
        if not self._capturing:
            self._capturing = True
            task_output.install()
        output, token = task_output.capture(ctx)
        try:
            prepared = cached_callable(spec)
            if prepared is None:
                # The first import of a user module can be slow: keep it off the loop too.
                prepared = await self._threads().call(prepare_callable, spec=spec)
            arguments = prepared.arguments(request.inputs, ctx)
            key = request.idempotency_key
            if not prepared.is_async:
                await self._lingering.wait(
                    key, request.attempt, lambda line: ctx.log(line, stream="whenflow")
                )

            def abandoned(call: ThreadCall) -> None:
                self._lingering.abandoned(key, request.attempt, call)

            value = await _call(prepared, arguments, self._threads, ctx, abandoned)
        finally:
            task_output.release(output, token)
        return TaskResult(outputs=prepared.outputs(value))

    def close(self) -> None:
        """Stop the thread pool; functions still running finish in the background."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        if self._capturing:
            self._capturing = False
            task_output.uninstall()

    def _threads(self) -> TaskThreads:
        if self._pool is None:
            self._pool = TaskThreads(self._max_threads)
        return self._pool

    async def _run_in_child(
        self, spec: str, request: TaskRequest, ctx: TaskContext
    ) -> dict[str, Any]:
        payload = _child_request(spec, request)
        answer = _ChildAnswer(ctx)
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        channel = asyncio.StreamReader()
        read_end = os.fdopen(read_fd, "rb", 0)
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(channel), read_end
            )
        except BaseException:
            read_end.close()
            os.close(write_fd)
            raise
        try:
            try:
                child = await spawn(
                    [sys.executable, "-m", python_child.__name__, str(write_fd)],
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    pass_fds=(write_fd,),
                    cwd=request.workdir,
                    env={**task_environment(), "PYTHONUNBUFFERED": "1"},
                )
            finally:
                os.close(write_fd)  # the child holds its copy; EOF arrives when it exits
            assert child.proc.stdout is not None
            assert child.proc.stderr is not None
            exit_code = await supervise(
                child,
                [
                    feed_stdin(child, payload),
                    read_lines(child.proc.stdout, answer.on_stdout),
                    read_lines(child.proc.stderr, answer.on_stderr),
                    read_lines(channel, answer.on_message, max_line=None),
                ],
                grace_s=self._grace_s,
            )
        finally:
            transport.close()
        return answer.outcome(exit_code)


async def _call(
    prepared: PreparedCallable,
    arguments: dict[str, Any],
    threads: Callable[[], TaskThreads],
    ctx: TaskContext,
    abandoned: Callable[[ThreadCall], None],
) -> Any:
    """The function's return value; what it raised is logged with the task's frames, raised.

    `abandoned` learns of a thread that runs on after its attempt was cancelled.
    """
    try:
        if prepared.is_async:
            # In its own asyncio task, awaited through a shield: a function that
            # swallows CancelledError cannot hold its attempt past a timeout,
            # a cancel or Ctrl-C; like a thread, it runs on in the background.
            running = asyncio.ensure_future(_carried(prepared.fn(**arguments)))
            try:
                return await asyncio.shield(running)
            except RaisedInThread as carrier:
                raise carrier.error from None
            except asyncio.CancelledError:
                running.cancel()
                raise
        call = ThreadCall(prepared.fn, asyncio.get_running_loop())
        try:
            value = await threads().submit(call.run, arguments)
        except RaisedInThread as carrier:
            raise carrier.error from None
        except asyncio.CancelledError:
            abandoned(call)
            raise
        if inspect.isawaitable(value):
            value = await value
        return value
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():  # the attempt was cancelled, not the task's doing
            raise
        _log_traceback(ctx, sys.exc_info()[1])
        raise
    except BaseException as exc:
        if interrupted_by_user(exc):
            raise
        _log_traceback(ctx, exc)
        if isinstance(exc, Exception) and not isinstance(exc, StopIteration):
            raise
        # SystemExit and the like must not reach the loop; a StopIteration leaving
        # a coroutine would become a RuntimeError: both keep their own name.
        raise task_raised(exc) from exc


async def _carried(work: Any) -> Any:
    """Await a task's coroutine in its own asyncio task.

    A `SystemExit` or `KeyboardInterrupt` leaving an asyncio task is re-raised
    by the loop itself: such a `BaseException` leaves in a carrier instead.
    """
    try:
        return await work
    except (asyncio.CancelledError, Exception):
        raise
    except BaseException as exc:
        raise RaisedInThread(exc) from None


def _log_traceback(ctx: TaskContext, exc: BaseException | None) -> None:
    for line in task_traceback(exc).splitlines():
        ctx.log(line, stream="stderr")


def _read_config(task: TaskSpec) -> tuple[str, str | None]:
    spec = task.config.get("callable")
    if spec is None:
        raise InvalidTaskConfig("python", "`callable` is missing; add callable: pkg.module:func")
    if not isinstance(spec, str):
        raise CallableNotFound(repr(spec), "must be a string 'package.module:function'")
    isolation = task.config.get("isolation")
    if isolation is not None and isolation not in ISOLATIONS:
        raise InvalidTaskConfig(
            "python", f"isolation {isolation!r} is not one of: {', '.join(ISOLATIONS)}"
        )
    return spec, isolation


def _child_request(spec: str, request: TaskRequest) -> bytes:
    message = {
        "callable": spec,
        "inputs": dict(request.inputs),
        # "" means the parent's cwd, which the child (maybe in `workdir`) does not share.
        "sys_path": [entry or os.getcwd() for entry in sys.path],
        "context": {
            "execution_id": request.execution_id,
            "node_id": request.node_id,
            "attempt": request.attempt,
            "idempotency_key": request.idempotency_key,
            "item_index": request.item_index,
        },
    }
    try:
        return python_child.encode(message).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidTaskConfig(
            "python",
            f"inputs of {spec!r} cannot be sent to an isolated process: {exc}; "
            "bind JSON values or paths, or use isolation: thread",
        ) from exc


@dataclass
class _ChildAnswer:
    """What the child said: forwards emits and logs, keeps the result or the error."""

    ctx: TaskContext
    outputs: dict[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=_STDERR_TAIL_LINES))

    def on_stdout(self, line: str) -> None:
        self.ctx.log(line, stream="stdout")

    def on_stderr(self, line: str) -> None:
        self.stderr_tail.append(line)
        self.ctx.log(line, stream="stderr")

    def on_message(self, line: str) -> None:
        try:
            message = python_child.decode(line)
            kind = message["kind"]
        except (ValueError, TypeError, KeyError):
            self.ctx.log(f"unreadable message from the child: {line:.200}", stream="stderr")
            return
        if kind == "emit":
            try:
                self.ctx.emit(str(message["name"]), message.get("payload") or {})
            except (WhenflowError, ValueError) as exc:  # an undeclared or invalid event
                if self.error is None:
                    self.error = {"type": type(exc).__name__, "message": str(exc)}
        elif kind == "log":
            self.ctx.log(str(message["message"]), stream=str(message.get("stream", "log")))
        elif kind == "result":
            self.outputs = dict(message["outputs"])
        elif kind == "error":
            self.error = message

    def outcome(self, exit_code: int) -> dict[str, Any]:
        if self.error is not None:
            module = str(self.error.get("module", ""))
            if module.partition(".")[0] != "whenflow":  # the task's error, not whenflow's
                for line in str(self.error.get("traceback", "")).splitlines():
                    self.ctx.log(line, stream="stderr")
            raise isolated_error(
                str(self.error.get("type", "")),
                str(self.error.get("message", "")),
                module=str(self.error.get("module", "")),
                traceback=str(self.error.get("traceback", "")),
            )
        if self.outputs is None:
            raise ChildProcessDied(exit_code, list(self.stderr_tail))
        return self.outputs


def python_executor(environment: ExecutorEnvironment) -> PythonExecutor:
    """The `python` entry point of `whenflow.executors`."""
    return PythonExecutor()
