"""OpenTelemetry spans of real pipeline runs: the SDK's in-memory exporter, and OTLP/HTTP
to a real loopback receiver."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from three_nodes import run_three_nodes

from whenflow.services.tracing import ExecutionTracer, tracing_from_env


@pytest.fixture
def exported() -> Iterator[tuple[ExecutionTracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = ExecutionTracer(provider)
    yield tracer, exporter
    tracer.shutdown()


async def test_one_span_per_execution_and_per_attempt(
    exported: tuple[ExecutionTracer, InMemorySpanExporter], tmp_home: Path
) -> None:
    tracer, exporter = exported
    good, bad = await run_three_nodes(tmp_home, [("good", 0), ("bad", 4)], tracer.listener)
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == sorted(
        ["pipeline good", "node a", "node b", "node c", "pipeline bad", "node a", "node b"]
    )
    roots = {s.name: s for s in spans if s.parent is None}
    assert set(roots) == {"pipeline good", "pipeline bad"}
    good_root, bad_root = roots["pipeline good"], roots["pipeline bad"]
    assert good_root.attributes["whenflow.execution_id"] == good.execution_id
    assert bad_root.attributes["whenflow.execution_id"] == bad.execution_id
    assert good_root.status.status_code is StatusCode.OK
    assert bad_root.status.status_code is StatusCode.ERROR
    assert bad_root.attributes["whenflow.status"] == "failed"
    for span in spans:
        assert span.end_time is not None
        assert span.start_time is not None
        assert span.end_time >= span.start_time
        if span.parent is None:
            continue
        root = good_root if span.parent.span_id == good_root.context.span_id else bad_root
        assert span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert root.start_time <= span.start_time
        assert span.end_time <= root.end_time
        assert span.attributes["whenflow.attempt"] == 1
    failed = [s for s in spans if s.parent is not None and s.status.status_code is StatusCode.ERROR]
    assert [(s.name, s.attributes["whenflow.outcome"]) for s in failed] == [("node b", "failed")]
    assert failed[0].parent.span_id == bad_root.context.span_id


def test_off_unless_the_endpoint_is_set() -> None:
    assert tracing_from_env({}) is None
    assert tracing_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}) is None


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


async def test_otlp_over_http_to_a_loopback_collector(tmp_home: Path) -> None:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver")
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
        tracer = tracing_from_env(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "whenflow-test"}
        )
        assert tracer is not None
        await run_three_nodes(tmp_home, [("good", 0)], tracer.listener)
        tracer.shutdown()  # flushes the batch: the POST has been answered when it returns
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert received, "no OTLP request reached the collector"
    names = []
    for path, content_type, body in received:
        assert path == "/v1/traces"
        assert content_type == "application/x-protobuf"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}[
                "service.name"
            ]
            assert service == "whenflow-test"
            for scope in resource_spans.scope_spans:
                names += [span.name for span in scope.spans]
    assert sorted(names) == ["node a", "node b", "node c", "pipeline good"]


def test_the_endpoint_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from whenflow.services.tracing import TracingUnavailable

    # As if `whenflow[otel]` were not installed: importing the exporter fails.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(TracingUnavailable, match=r"pip install 'whenflow\[otel\]'"):
        tracing_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
