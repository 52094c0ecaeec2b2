"""Prometheus metrics of a server, recorded from the engine's events (DESIGN.md §11).

The engine knows nothing of Prometheus: it calls event listeners
(`Orchestrator.add_listener`, `ExecutionService.run/resume(on_event=...)`),
and `Metrics.listener(pipeline)` is one that turns an execution's events into
these series (`GET /metrics` serves them, api/operations.py):

| series | type | labels | from |
| --- | --- | --- | --- |
| `whenflow_executions_started_total` | counter | pipeline | `pipeline.started` |
| `whenflow_executions_resumed_total` | counter | pipeline | `pipeline.resumed` |
| `whenflow_executions_finished_total` | counter | pipeline, status | `pipeline.<status>` |
| `whenflow_node_attempt_duration_seconds` | histogram | pipeline, outcome | started to end |
| `whenflow_dispatch_latency_seconds` | histogram | pipeline | see below |
| `whenflow_inbox_lag_seconds` | histogram | | `observe_inbox_lag` |
| `whenflow_queue_depth` | gauge | | `StatsSource.queued_attempts` |
| `whenflow_running_executions`, `whenflow_running_attempts` | gauge | | `StatsSource` |

Dispatch latency is the time from the event that last changed the execution
(anything but a `started`) to a node's first attempt starting: for a node
started by another's end, the engine's reaction time. Retries (attempt > 1)
are left out, their backoff is not latency. Outcomes of attempts are the
event that ended them: completed, failed, retrying, stopped, cancelled.

Prometheus's standard `process_*` series (CPU, memory, open files) and
`python_info` come along. Each `Metrics` has its own registry (so several apps in one process do not
collide); a listener never raises into the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from whenflow.domain.events import EXTERNAL_SOURCE, PIPELINE_SOURCE, Event

PIPELINE_ENDS = frozenset({"completed", "failed", "stopped", "cancelled"})
ATTEMPT_ENDS = frozenset({"completed", "failed", "retrying", "stopped", "cancelled"})
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_log = logging.getLogger(__name__)


class StatsSource(Protocol):
    """What the server counts live; the integrating server implements it.

    Each call is cheap (read under no lock, from the loop's thread): counts of
    the executions whose dispatcher runs in this process, the task attempts
    running in them, and the attempts queued for a concurrency slot.
    """

    def running_executions(self) -> int: ...

    def running_attempts(self) -> int: ...

    def queued_attempts(self) -> int: ...


class Metrics:
    """The server's series, in one registry; `exposition()` is the `/metrics` body."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        if registry is None:  # the standard process_* and python_info series (Linux: /proc)
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.executions_started = Counter(
            "whenflow_executions_started", "Executions started.", ["pipeline"], registry=r
        )
        self.executions_resumed = Counter(
            "whenflow_executions_resumed",
            "Executions resumed after their process stopped.",
            ["pipeline"],
            registry=r,
        )
        self.executions_finished = Counter(
            "whenflow_executions_finished",
            "Executions that ended, by final status.",
            ["pipeline", "status"],
            registry=r,
        )
        self.attempt_duration = Histogram(
            "whenflow_node_attempt_duration_seconds",
            "Wall time of node attempts, from started to the event that ended them.",
            ["pipeline", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "whenflow_dispatch_latency_seconds",
            "From the event that last changed an execution to a node's first attempt starting.",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inbox_lag = Histogram(
            "whenflow_inbox_lag_seconds",
            "From an inbox message being stored to its being applied.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "whenflow_queue_depth", "Attempts queued for a concurrency slot.", registry=r
        )
        self.running_executions = Gauge(
            "whenflow_running_executions", "Executions running in this process.", registry=r
        )
        self.running_attempts = Gauge(
            "whenflow_running_attempts", "Task attempts running in this process.", registry=r
        )

    def track(self, source: StatsSource) -> None:
        """Read the gauges from `source` at every scrape."""
        self.running_executions.set_function(lambda: float(source.running_executions()))
        self.running_attempts.set_function(lambda: float(source.running_attempts()))
        self.queue_depth.set_function(lambda: float(source.queued_attempts()))

    def listener(self, pipeline: str) -> Callable[[Event], None]:
        """An event listener recording one execution of `pipeline` (one per execution)."""
        return ExecutionRecorder(self, pipeline)

    def observe_inbox_lag(self, seconds: float) -> None:
        """Record that an inbox message was applied `seconds` after it was stored."""
        self.inbox_lag.observe(max(0.0, seconds))

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every series, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ExecutionRecorder:
    """Turns one execution's events into `Metrics` series; see the module docstring."""

    def __init__(self, metrics: Metrics, pipeline: str) -> None:
        self._metrics = metrics
        self._pipeline = pipeline
        self._attempt_started: dict[str, float] = {}
        self._last_change: float | None = None

    def __call__(self, event: Event) -> None:
        try:
            self._record(event)
        except Exception:  # a metric must never fail an execution
            _log.exception("could not record metrics for %s", event.event_type)

    def _record(self, event: Event) -> None:
        m, pipeline = self._metrics, self._pipeline
        source, _, name = event.event_type.partition(".")
        if source == PIPELINE_SOURCE:
            if name == "started":
                m.executions_started.labels(pipeline).inc()
            elif name == "resumed":
                m.executions_resumed.labels(pipeline).inc()
            elif name in PIPELINE_ENDS:
                m.executions_finished.labels(pipeline, name).inc()
            self._last_change = event.timestamp
            return
        if source != EXTERNAL_SOURCE and name == "started":
            self._attempt_started[source] = event.timestamp
            attempt = event.payload.get("attempt", 1)
            if attempt == 1 and self._last_change is not None:
                latency = max(0.0, event.timestamp - self._last_change)
                m.dispatch_latency.labels(pipeline).observe(latency)
            return
        self._last_change = event.timestamp
        if name in ATTEMPT_ENDS:
            started = self._attempt_started.pop(source, None)
            if started is not None:
                duration = max(0.0, event.timestamp - started)
                m.attempt_duration.labels(pipeline, name).observe(duration)
