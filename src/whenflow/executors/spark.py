"""The `spark` executor: a PySpark function or Spark SQL, on `local[*]` or a cluster.

    task: {type: spark, callable: jobs.features:transform}     # transform(spark, **inputs)
    task: {type: spark, sql: "SELECT user, count(*) AS n FROM events GROUP BY user"}
    task: {type: spark, connection: cluster, callable: ...}    # master from a connection
    task: {type: spark, master: "local[2]", sql: ...}

PySpark is the optional extra `whenflow[spark]` and needs Java 17+. The
master is the task's `master`, else its connection's URL (its query string
and `extra.conf` are Spark settings), else `local[*]`. One SparkSession per
process (`spark_session.py`); each attempt gets a child session of it.

- `callable`: imported like a python task's (`package.module:function`, from
  the working directory and the pipeline's folder) and called in a worker
  thread as `function(spark, **inputs)` (a `ctx` parameter gets the context).
  Inputs arrive as they are: a Parquet artifact is a local path
  (`spark.read.parquet(path)`).
- `sql`: one Spark SQL query. Inputs that are Parquet artifacts are temporary
  views named like the input; the others are `:name` parameters (the query
  text is never rendered with templates: no injection).

What it returns: a DataFrame becomes the outputs `artifact` (one Parquet file,
stored as an artifact with its schema), `schema` (Spark's JSON schema) and
`rowcount`; a dict is the outputs, a DataFrame in it becoming a Parquet
artifact under its key; None is no outputs.

A failing Spark job fails the attempt with a `SparkJobFailed` named like
Spark's exception (`AnalysisException`, `Py4JJavaError`...), naming the node
and the cause; `retryOn` matches that name. Cancelling the attempt cancels
its Spark jobs.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from whenflow.domain.connections import ConnectionResolver, UnknownConnection
from whenflow.domain.definitions import TaskSpec
from whenflow.domain.errors import TaskRaised, WhenflowError, task_raised, task_raised_class
from whenflow.domain.task_io import ExecutorEnvironment, TaskContext, TaskRequest, TaskResult
from whenflow.executors.callables import prepare_callable
from whenflow.executors.errors import InvalidTaskConfig, TaskOutputError
from whenflow.executors.spark_session import (
    DEFAULT_MASTER,
    SparkUnavailable,
    cancel_job_group,
    process_session,
    pyspark_installed,
)
from whenflow.executors.spark_tables import spark_schema, split_inputs, write_parquet

_CONFIG_FIELDS = ("callable", "sql", "master", "connection")
_MESSAGE_LINES = 12
_SCRATCH_MAX_AGE_S = 3600.0
_RECANCEL_S = 0.5


class SparkJobFailed(TaskRaised):
    """A Spark job failed; re-created under Spark's exception name (`AnalysisException`...)."""

    error_type = "SparkJobFailed"


class SparkExecutor:
    """Runs `spark` tasks in worker threads on the process's SparkSession."""

    task_type = "spark"

    def __init__(
        self,
        *,
        connections: ConnectionResolver | None = None,
        conf: Mapping[str, str] | None = None,
    ) -> None:
        """
        Args:
            connections: where `connection: NAME` is looked up (None: no connections).
            conf: Spark settings for the session this executor starts (a
                connection's settings are added to them).
        """
        self._connections = connections
        self._conf = dict(conf or {})
        self._scratch = Path(tempfile.gettempdir()) / f"whenflow-spark-{uuid.uuid4().hex[:12]}"

    def check(self, task: TaskSpec) -> list[str]:
        """Config problems: fields, one of callable/sql, master or connection, PySpark present."""
        config = task.config
        problems = [
            f"spark task: unknown field {key!r}; known fields: {', '.join(_CONFIG_FIELDS)}"
            for key in config
            if key not in _CONFIG_FIELDS
        ]
        if ("callable" in config) == ("sql" in config):
            problems.append("spark task: give exactly one of `callable` and `sql`")
        if "master" in config and "connection" in config:
            problems.append("spark task: give `master` or `connection`, not both")
        for key in ("sql", "master", "connection"):
            if key in config and (not isinstance(config[key], str) or not config[key].strip()):
                problems.append(f"spark task: `{key}` must be a non-empty string")
        if not pyspark_installed():
            problems.append(str(SparkUnavailable("PySpark is not installed")))
        elif isinstance(config.get("callable"), str):
            try:
                prepare_callable(config["callable"])
            except InvalidTaskConfig as exc:
                problems.append(str(exc).replace("python task:", "spark task:", 1))
        return problems

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        """Run the function or query in a worker thread; cancelling cancels its Spark jobs.

        The thread is a daemon: a job that ignores cancellation never holds up
        the process's exit (the session is stopped then).
        """
        master, conf = self._master(request.task)
        group = f"whenflow-{uuid.uuid4().hex}"
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        finished = threading.Event()

        def work() -> None:
            try:
                outputs = self._run(request, ctx, master, conf, group)
            except BaseException as exc:
                error = exc if isinstance(exc, Exception) else task_raised(exc)
                _settle(loop, answer, None, error)
            else:
                _settle(loop, answer, outputs, None)
            finally:
                finished.set()

        name = f"whenflow-spark:{request.node_id}"
        threading.Thread(target=work, name=name, daemon=True).start()
        try:
            outputs = await answer
        except asyncio.CancelledError:
            _keep_cancelling(group, finished)
            raise
        return TaskResult(outputs=outputs)

    def close(self) -> None:
        """Delete the scratch folder of DataFrame outputs (the session lives on until exit)."""
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _master(self, task: TaskSpec) -> tuple[str, dict[str, str]]:
        conf = dict(self._conf)
        if isinstance(task.config.get("master"), str):
            return task.config["master"].strip(), conf
        name = task.config.get("connection")
        if not isinstance(name, str):
            return DEFAULT_MASTER, conf
        if self._connections is None:
            raise InvalidTaskConfig(
                "spark", f"connection {name!r}: this whenflow has no connections configured"
            )
        try:
            connection = self._connections.get(name)
        except UnknownConnection as exc:
            raise InvalidTaskConfig("spark", str(exc)) from None
        parts = urlsplit(connection.url)
        conf.update(parse_qsl(parts.query))
        extra_conf = connection.extra.get("conf")
        if isinstance(extra_conf, Mapping):
            conf.update({str(k): str(v) for k, v in extra_conf.items()})
        master = urlunsplit(parts._replace(query="")) if parts.query else connection.url
        return master, conf

    def _attempt_scratch(self) -> Path:
        """A new folder for one attempt's DataFrame outputs; folders over an hour old go.

        The engine copies the outputs into the artifact store as soon as the
        attempt returns, so an hour-old folder is no longer read.
        """
        self._scratch.mkdir(mode=0o700, exist_ok=True)
        now = time.time()
        for old in self._scratch.iterdir():
            try:
                if now - old.stat().st_mtime > _SCRATCH_MAX_AGE_S:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                continue
        folder = self._scratch / uuid.uuid4().hex
        folder.mkdir(mode=0o700)
        return folder

    def _run(
        self,
        request: TaskRequest,
        ctx: TaskContext,
        master: str,
        conf: Mapping[str, str],
        group: str,
    ) -> dict[str, Any]:
        scratch = self._attempt_scratch()
        spark = process_session(master, conf).newSession()
        context = spark.sparkContext
        context.setJobGroup(group, f"whenflow {request.node_id}", interruptOnCancel=True)
        try:
            config = request.task.config
            if isinstance(config.get("sql"), str):
                value: Any = _run_sql(spark, config["sql"], request.inputs)
            else:
                value = _call(spark, str(config.get("callable")), request.inputs, ctx)
            return _outputs(value, scratch)
        except WhenflowError:
            raise
        except Exception as exc:
            if not _from_spark(exc):
                raise
            raise _job_failed(request.node_id, exc, ctx) from None
        finally:
            context.setLocalProperty("spark.jobGroup.id", None)


def _settle(
    loop: asyncio.AbstractEventLoop,
    answer: asyncio.Future[dict[str, Any]],
    outputs: dict[str, Any] | None,
    error: BaseException | None,
) -> None:
    """Hand the worker thread's outcome to the loop (unless the attempt was cancelled)."""

    def settle() -> None:
        if answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(outputs or {})

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop closed: nobody waits for this attempt any more
        return


def _keep_cancelling(group: str, finished: threading.Event) -> None:
    """Cancel the attempt's Spark jobs until its thread ends.

    Spark cancels the jobs running in a group, not those submitted later: a
    job that was still being planned when the attempt was cancelled starts
    afterwards, so the group is cancelled again until the thread returns.
    """

    def repeat() -> None:
        while True:
            cancel_job_group(group)
            if finished.wait(_RECANCEL_S):
                return

    threading.Thread(target=repeat, name=f"whenflow-spark-cancel:{group}", daemon=True).start()


def _run_sql(spark: Any, query: str, inputs: Mapping[str, Any]) -> Any:
    tables, parameters = split_inputs(inputs)
    for name, path in tables.items():
        spark.read.parquet(Path(path).resolve().as_uri()).createOrReplaceTempView(name)
    return spark.sql(query, args=parameters or None)


def _call(spark: Any, spec: str, inputs: Mapping[str, Any], ctx: TaskContext) -> Any:
    prepared = prepare_callable(spec)
    if prepared.is_async:
        raise InvalidTaskConfig(
            "spark", f"callable {spec!r} is async; a Spark function is a plain `def`"
        )
    first = _session_parameter(prepared.fn, spec)
    if first in inputs:
        raise InvalidTaskConfig(
            "spark",
            f"callable {spec!r}: input {first!r} has the name of the parameter that receives "
            "the SparkSession; rename the binding",
        )
    try:
        arguments = prepared.arguments({**inputs, first: spark}, ctx)
    except InvalidTaskConfig as exc:
        raise InvalidTaskConfig("spark", exc.reason) from None
    return prepared.fn(**arguments)


def _session_parameter(fn: Any, spec: str) -> str:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)
    if not params or params[0].kind not in kinds or params[0].name == "ctx":
        raise InvalidTaskConfig(
            "spark",
            f"callable {spec!r} must take the SparkSession as its first parameter: "
            "def transform(spark, ...)",
        )
    return params[0].name


def _is_frame(value: Any) -> bool:
    return callable(getattr(value, "toDF", None)) and hasattr(value, "write")


def _outputs(value: Any, scratch: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if _is_frame(value):
        path = write_parquet(value, scratch, "artifact")
        return {"artifact": path, "schema": spark_schema(value), "rowcount": _rows(path)}
    if isinstance(value, Mapping):
        outputs: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TaskOutputError(f"output names must be strings, not {key!r}")
            outputs[key] = write_parquet(item, scratch, key) if _is_frame(item) else item
        return outputs
    raise TaskOutputError(
        f"a spark task returns a DataFrame, a dict of outputs or None, not a {type(value).__name__}"
    )


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def _from_spark(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("pyspark", "py4j"))


def _job_failed(node_id: str, exc: BaseException, ctx: TaskContext) -> TaskRaised:
    """Spark's error as a SparkJobFailed of the same name: the cause's first lines."""
    text = str(exc).strip()
    for line in text.splitlines():
        ctx.log(line, stream="stderr")
    lines = text.splitlines()
    short = "\n".join(lines[:_MESSAGE_LINES])
    if len(lines) > _MESSAGE_LINES:
        short += f"\n... ({len(lines) - _MESSAGE_LINES} more lines in the task log)"
    cls = task_raised_class(type(exc).__name__, SparkJobFailed)
    return cls(f"the Spark job of node {node_id!r} failed: {type(exc).__name__}: {short}")


def spark_executor(environment: ExecutorEnvironment) -> SparkExecutor:
    """The `spark` entry point of `whenflow.executors`."""
    return SparkExecutor(connections=environment.connections)
