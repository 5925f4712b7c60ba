"""Event tracing: parent-based sampling from headers, parent/child links, header injection,
the HTTP hook and the OTLP exporter."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from headrace.errors import ConfigError, DependencyMissingError
from headrace.monitoring.tracing import (
    TRACEPARENT,
    EventTracer,
    http_server_span,
    tracer_provider,
)
from support.otlp import OtlpReceiver, otlp_receiver


@dataclass
class Event:
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def producer_headers(provider: TracerProvider, *, sampled: bool = True) -> list[tuple[str, bytes]]:
    """Headers a traced producer would send (its span ended)."""
    span = provider.get_tracer("producer").start_span("produce", kind=SpanKind.PRODUCER)
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(span))
    span.end()
    value = carrier[TRACEPARENT]
    if not sampled:
        value = value[:-2] + "00"
    return [("key-id", b"7"), (TRACEPARENT, value.encode()), ("tracestate", b"vendor=1")]


def test_select_follows_the_parent_then_the_ratio() -> None:
    provider, _ = memory_provider()
    events = [
        Event(producer_headers(provider, sampled=True)),
        Event(producer_headers(provider, sampled=False)),
        Event([(TRACEPARENT, b"00-not-a-trace")]),  # malformed: treated as no parent
        Event(),
        Event([("Traceparent", producer_headers(provider)[1][1])]),  # any case
    ]
    never = EventTracer(pipeline="p", sample_ratio=0.0, provider=provider, seed=1)
    assert never.select(events) == [0, 4]
    assert never.select(events, always=[1, 3]) == [0, 1, 3, 4]
    always = EventTracer(pipeline="p", sample_ratio=1.0, provider=provider, seed=1)
    assert always.select(events) == [0, 2, 3, 4]  # not 1: its producer said no


def test_the_ratio_is_the_share_of_events_without_a_trace() -> None:
    provider, _ = memory_provider()
    tracer = EventTracer(pipeline="p", sample_ratio=0.01, provider=provider, seed=3)
    batch = [Event() for _ in range(512)]
    chosen = sum(len(tracer.select(batch)) for _ in range(200))
    n = 512 * 200
    sigma = (n * 0.01 * 0.99) ** 0.5
    assert abs(chosen - n * 0.01) < 5 * sigma


def test_the_draw_does_not_depend_on_how_the_stream_is_cut_into_batches(
    rng: np.random.Generator,
) -> None:
    """The ratio is drawn per event (gaps carried from batch to batch): the same seed
    chooses the same events of a stream in one batch or in many, empty ones included."""
    provider, _ = memory_provider()
    n = 20_000
    whole = EventTracer(pipeline="p", sample_ratio=0.02, provider=provider, seed=5)
    expected = whole.select([Event() for _ in range(n)])
    cut = EventTracer(pipeline="p", sample_ratio=0.02, provider=provider, seed=5)
    got: list[int] = []
    start = 0
    while start < n:
        size = min(n - start, int(rng.integers(0, 40)))
        got += [start + i for i in cut.select([Event() for _ in range(size)])]
        start += size
    assert got == expected
    sigma = (n * 0.02 * 0.98) ** 0.5
    assert abs(len(got) - n * 0.02) < 5 * sigma


def test_an_event_span_continues_the_producer_trace() -> None:
    provider, exporter = memory_provider()
    headers = producer_headers(provider)
    (producer,) = exporter.get_finished_spans()
    tracer = EventTracer(pipeline="fraud", sample_ratio=0.0, provider=provider)
    span = tracer.begin(headers, start_ns=1_000, attributes={"headrace.release": "fraud:1"})
    tracer.stage(span, "decode", start_ns=1_000, end_ns=2_000)
    tracer.stage(span, "validate", start_ns=2_000, end_ns=3_000, error="Missing field `x`")
    out = tracer.inject(span, [*headers, ("headrace-release", b"fraud:1")])
    tracer.end(span, end_ns=5_000)

    spans = {s.name: s for s in exporter.get_finished_spans()}
    event = spans["fraud process"]
    assert event.kind is SpanKind.CONSUMER
    assert event.context.trace_id == producer.context.trace_id
    assert event.parent is not None and event.parent.span_id == producer.context.span_id
    assert (event.start_time, event.end_time) == (1_000, 5_000)
    assert event.attributes is not None and event.attributes["headrace.release"] == "fraud:1"
    for name in ("decode", "validate"):
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == event.context.span_id
        assert child.context.trace_id == producer.context.trace_id
    assert spans["validate"].status.status_code is StatusCode.ERROR
    assert spans["validate"].status.description == "Missing field `x`"
    # the output names the event span as its parent, in the producer's trace, whose vendor
    # state (tracestate) travels on with it, once
    names = [k for k, _ in out]
    assert names.count(TRACEPARENT) == 1 and names.count("tracestate") == 1
    assert dict(out)["tracestate"] == b"vendor=1"
    assert ("key-id", b"7") in out and ("headrace-release", b"fraud:1") in out
    version, trace_id, span_id, flags = dict(out)[TRACEPARENT].decode().split("-")
    assert int(trace_id, 16) == producer.context.trace_id
    assert int(span_id, 16) == event.context.span_id
    assert int(flags, 16) & 1  # sampled


def test_a_dead_letter_is_traced_even_when_its_producer_did_not_sample() -> None:
    provider, exporter = memory_provider()
    headers = producer_headers(provider, sampled=False)
    exporter.clear()
    tracer = EventTracer(pipeline="p", sample_ratio=0.0, provider=provider)
    unforced = tracer.begin(headers, start_ns=1, attributes={})
    assert not unforced.is_recording()
    span = tracer.begin(headers, start_ns=1, attributes={}, force=True)
    tracer.fail(span, stage="validate", error="Expected `float`", field="amount")
    tracer.end(span, end_ns=2)
    (recorded,) = exporter.get_finished_spans()
    parent_trace = int(headers[1][1].split(b"-")[1], 16)
    assert recorded.context.trace_id == parent_trace
    assert recorded.status.status_code is StatusCode.ERROR
    assert recorded.attributes is not None
    assert recorded.attributes["headrace.error.field"] == "amount"


def test_a_root_event_starts_a_new_trace() -> None:
    provider, exporter = memory_provider()
    tracer = EventTracer(pipeline="p", sample_ratio=1.0, provider=provider)
    span = tracer.begin([], start_ns=1, attributes={})
    tracer.end(span, end_ns=2)
    (recorded,) = exporter.get_finished_spans()
    assert recorded.parent is None


def test_http_server_span_continues_the_callers_trace() -> None:
    provider, exporter = memory_provider()
    headers = producer_headers(provider)
    (caller,) = exporter.get_finished_spans()
    asgi = [(b"host", b"x"), (b"traceparent", headers[1][1])]
    tracer = provider.get_tracer("server")
    with pytest.raises(RuntimeError):
        with http_server_span(tracer, asgi, method="POST", route="/v2/models/{name}/infer"):
            with tracer.start_as_current_span("infer"):
                pass
            raise RuntimeError("model fell over")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["POST /v2/models/{name}/infer"]
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None and server.parent.span_id == caller.context.span_id
    assert spans["infer"].parent is not None
    assert spans["infer"].parent.span_id == server.context.span_id
    assert server.status.status_code is StatusCode.ERROR
    assert [e.name for e in server.events] == ["exception"]


@pytest.fixture
def otlp_collector(free_tcp_port: int) -> Iterator[OtlpReceiver]:
    with otlp_receiver(free_tcp_port) as receiver:
        yield receiver


def test_tracer_provider_exports_over_otlp_when_the_endpoint_is_set(
    otlp_collector: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_collector.url)
    provider = tracer_provider("fraud-scoring")
    tracer = EventTracer(pipeline="fraud-scoring", sample_ratio=1.0, provider=provider)
    span = tracer.begin([], start_ns=10, attributes={"headrace.release": "fraud:1"})
    tracer.stage(span, "predict", start_ns=10, end_ns=20)
    tracer.end(span, end_ns=30)
    provider.shutdown()  # flushes the batch processor
    assert [path for path, _ in otlp_collector.requests] == ["/v1/traces"]
    received = otlp_collector.spans()
    assert {resource["service.name"] for resource, _ in received} == {"fraud-scoring"}
    assert sorted(span.name for _, span in received) == ["fraud-scoring process", "predict"]


def test_without_an_endpoint_the_provider_exports_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    provider = tracer_provider("x", sample_ratio=0.5)
    assert "0.5" in provider.sampler.get_description()
    assert provider._active_span_processor._span_processors == ()
    provider.shutdown()


def test_a_bad_ratio_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"tracing.sample_ratio 1.5 is not within \[0, 1\]"):
        EventTracer(pipeline="p", sample_ratio=1.5)
    with pytest.raises(ConfigError, match="sample_ratio nan"):
        tracer_provider("x", sample_ratio=float("nan"))


def test_a_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(DependencyMissingError, match=r"pip install 'headrace\[otel\]'"):
        EventTracer(pipeline="p", sample_ratio=0.1)
