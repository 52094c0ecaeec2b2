"""The one SparkSession of this process: started on first use, reused, stopped at exit.

Starting Spark launches a JVM (seconds), so whenflow starts it once, lazily,
from the worker thread of the first `spark` task, and every later task gets a
child session of it (`newSession()`: the same SparkContext and cache, its own
temporary views and SQL settings, so two tasks running at once never see each
other's views). The master is fixed when the session starts: a later task
that asks for another master fails with a message saying so. The session is
stopped when the process exits (`atexit`), or by `stop_session()`.
"""

from __future__ import annotations

import atexit
import importlib.util
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from whenflow.executors.errors import InvalidTaskConfig

DEFAULT_MASTER = "local[*]"
APP_NAME = "whenflow"
_LOG_SETTINGS = Path(__file__).with_name("spark_log4j2.properties")
DEFAULT_CONF: Mapping[str, str] = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    # Errors only on stderr: Spark's start-up lines would fill `whenflow run`'s terminal.
    "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={_LOG_SETTINGS.as_uri()}",
}
INSTALL_HINT = (
    "install the extra (pip install 'whenflow[spark]') and Java 17 or newer "
    "(e.g. apt-get install openjdk-17-jre-headless), or set JAVA_HOME"
)

_lock = threading.Lock()
_session: Any = None
_master: str | None = None
_registered_exit = False


class SparkUnavailable(InvalidTaskConfig):
    """PySpark is not installed or its JVM would not start; the message says what to install."""

    def __init__(self, reason: str) -> None:
        super().__init__("spark", f"{reason}; {INSTALL_HINT}")


def pyspark_installed() -> bool:
    """Whether the `pyspark` package can be imported (without importing it)."""
    return importlib.util.find_spec("pyspark") is not None


def process_session(master: str, conf: Mapping[str, str] | None = None) -> Any:
    """The process's SparkSession, started on `master` with `conf` if none runs yet.

    Blocking (the first call starts a JVM): call it from a worker thread.
    Raises SparkUnavailable (no pyspark, no Java) or InvalidTaskConfig when
    the running session has another master.
    """
    global _session, _master, _registered_exit
    with _lock:
        if _session is not None:
            if master != _master:
                raise InvalidTaskConfig(
                    "spark",
                    f"this process's Spark session runs on master {_master!r}, the task asks "
                    f"for {master!r}; the tasks run by one whenflow process share one master "
                    "(give them the same `master` or `connection`)",
                )
            return _session
        if not pyspark_installed():
            raise SparkUnavailable("PySpark is not installed")
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.master(master).appName(APP_NAME)
        for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
            builder = builder.config(key, str(value))
        try:
            session = builder.getOrCreate()
        except Exception as exc:
            raise SparkUnavailable(
                f"Spark did not start on master {master!r}: {type(exc).__name__}: {exc}"
            ) from exc
        session.sparkContext.setLogLevel("ERROR")
        _quiet_query_context_loggers()
        _session, _master = session, master
        if not _registered_exit:
            atexit.register(stop_session)
            _registered_exit = True
        return session


def _quiet_query_context_loggers() -> None:
    """PySpark 4 logs each failing query's JVM stack trace to stderr; the attempt's
    error and task log carry it already."""
    try:
        from pyspark.logger import PySparkLogger
    except ImportError:  # PySpark 3.5 has no such loggers
        return
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).disabled = True


def running_master() -> str | None:
    """The master of the running session, or None when Spark has not started."""
    return _master


def cancel_job_group(group: str) -> None:
    """Cancel the running Spark jobs of `group` (an attempt's); no-op when Spark is not running."""
    session = _session
    if session is None:
        return
    try:
        session.sparkContext.cancelJobGroup(group)
    except Exception:  # the session stopped meanwhile: nothing of the group runs any more
        return


def stop_session() -> None:
    """Stop the process's session and its JVM (a later task starts a new one)."""
    global _session, _master
    with _lock:
        session, _session, _master = _session, None, None
    if session is not None:
        session.stop()
