"""OpenTelemetry traces of executions: one span per execution, one per node attempt.

Optional (`pip install 'whenflow[otel]'`) and off unless the standard
variable `OTEL_EXPORTER_OTLP_ENDPOINT` is set: then `tracing_from_env()`
builds a tracer provider exporting over OTLP/HTTP (protobuf) to
`$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces`, in batches; the exporter reads the
other standard `OTEL_EXPORTER_OTLP_*` variables (headers, timeout,
certificates), and `OTEL_SERVICE_NAME` names the service (default `whenflow`).

Like the metrics (services/metrics.py), spans are made from the engine's
events: `ExecutionTracer.listener(pipeline)` is an event listener for one
execution. Span times are the events' own timestamps:

- `pipeline <name>`: from `pipeline.started` (or `.resumed`: a resumed
  execution is a new span) to its end event; attributes
  `whenflow.execution_id`, `whenflow.pipeline`, `whenflow.status`; status
  ERROR unless it completed.
- `node <id>`, a child of it: from `<node>.started` to the event that ended
  the attempt; attributes `whenflow.node`, `whenflow.attempt`,
  `whenflow.outcome`; status ERROR for failed and retrying attempts.

A listener never raises into the engine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from whenflow.domain.errors import WhenflowError
from whenflow.domain.events import EXTERNAL_SOURCE, PIPELINE_SOURCE, Event

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
PIPELINE_ENDS = frozenset({"completed", "failed", "stopped", "cancelled"})
ATTEMPT_ENDS = frozenset({"completed", "failed", "retrying", "stopped", "cancelled"})
_log = logging.getLogger(__name__)


class TracingUnavailable(WhenflowError):
    """OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry packages are missing."""


def tracing_from_env(environ: Mapping[str, str] | None = None) -> ExecutionTracer | None:
    """A tracer exporting over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else None.

    Raises:
        TracingUnavailable: the variable is set and `whenflow[otel]` is not installed.
    """
    env = os.environ if environ is None else environ
    if not env.get(ENDPOINT_VARIABLE, "").strip():
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            f"{ENDPOINT_VARIABLE} is set but OpenTelemetry is not installed ({exc.name}); "
            "install it with `pip install 'whenflow[otel]'`, or unset the variable"
        ) from None
    endpoint = env[ENDPOINT_VARIABLE].strip().rstrip("/") + "/v1/traces"
    service = env.get("OTEL_SERVICE_NAME", "").strip() or "whenflow"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return ExecutionTracer(provider)


class ExecutionTracer:
    """Makes spans of executions from their events, with `provider`'s exporters."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer: Tracer = provider.get_tracer("whenflow")

    def listener(self, pipeline: str) -> Callable[[Event], None]:
        """An event listener tracing one execution of `pipeline` (one per execution)."""
        return _ExecutionSpans(self._tracer, pipeline)

    def shutdown(self) -> None:
        """Export what is pending and stop (at server shutdown)."""
        self.provider.shutdown()


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class _ExecutionSpans:
    def __init__(self, tracer: Tracer, pipeline: str) -> None:
        self._tracer = tracer
        self._pipeline = pipeline
        self._execution: Span | None = None
        self._attempts: dict[str, Span] = {}

    def __call__(self, event: Event) -> None:
        try:
            self._record(event)
        except Exception:  # a trace must never fail an execution
            _log.exception("could not trace %s", event.event_type)

    def _record(self, event: Event) -> None:
        from opentelemetry import trace

        source, _, name = event.event_type.partition(".")
        if source == PIPELINE_SOURCE:
            if name in ("started", "resumed") and self._execution is None:
                self._execution = self._tracer.start_span(
                    f"pipeline {self._pipeline}",
                    start_time=_ns(event.timestamp),
                    attributes={
                        "whenflow.execution_id": event.execution_id,
                        "whenflow.pipeline": self._pipeline,
                        "whenflow.resumed": name == "resumed",
                    },
                )
            elif name in PIPELINE_ENDS and self._execution is not None:
                self._end_execution(event, name)
            return
        if source == EXTERNAL_SOURCE or self._execution is None:
            return
        if name == "started":
            attributes: dict[str, Any] = {"whenflow.node": source}
            attempt = event.payload.get("attempt")
            if isinstance(attempt, int):
                attributes["whenflow.attempt"] = attempt
            self._attempts[source] = self._tracer.start_span(
                f"node {source}",
                context=trace.set_span_in_context(self._execution),
                start_time=_ns(event.timestamp),
                attributes=attributes,
            )
        elif name in ATTEMPT_ENDS:
            span = self._attempts.pop(source, None)
            if span is not None:
                _finish(span, name, event)

    def _end_execution(self, event: Event, status: str) -> None:
        assert self._execution is not None
        for span in self._attempts.values():  # attempts the ending cut short
            _finish(span, "cancelled", event)
        self._attempts.clear()
        self._execution.set_attribute("whenflow.status", status)
        _finish(self._execution, status, event)
        self._execution = None


def _finish(span: Span, outcome: str, event: Event) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("whenflow.outcome", outcome)
    if outcome in ("failed", "retrying"):
        error = event.payload.get("error")
        span.set_status(Status(StatusCode.ERROR, str(error) if error else outcome))
    elif outcome == "completed":
        span.set_status(Status(StatusCode.OK))
    else:
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end(end_time=_ns(event.timestamp))
