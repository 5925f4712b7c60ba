"""Traces and live accuracy through a real broker (the shared Redis): one trace runs from a
producer, through the worker, to whoever consumes the output; labels arrive on their own
stream and are joined."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from headrace.inference.service import InferenceService
from headrace.pipeline.observe import build_monitors
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.pipeline.worker import Worker
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.base import ModelOutput
from headrace.streams.base import Message, OutRecord
from headrace.streams.urls import open_sink, open_source
from headrace.types import Matrix

pytestmark = pytest.mark.redis

SCHEMA = Schema(fields=[Field(name="amount", type="float", min=0, max=1000)])


class Threshold:
    flavor = "python"

    def predict(self, matrix: Matrix) -> ModelOutput:
        p = np.clip(np.asarray(matrix[:, 0], dtype=float) / 1000.0, 0, 1)
        return ModelOutput(
            predictions=(p >= 0.5).astype(int),
            probabilities=np.column_stack([1 - p, p]),
            classes=np.array([0, 1]),
        )


@pytest.fixture
def streams(redis_url: str) -> Iterator[dict[str, str]]:
    token = uuid.uuid4().hex[:10]
    names = {k: f"headrace-test:{token}:{k}" for k in ("events", "scores", "dlq", "labels")}
    yield names
    client = redis.Redis.from_url(redis_url)
    client.delete(*names.values())
    client.close()


def wait_for(condition: Callable[[], bool], *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def read(redis_url: str, stream: str, *, expected: int) -> list[Message]:
    source = open_source(
        redis_url, topic=stream, group=f"reader-{uuid.uuid4().hex[:6]}", options={}
    )
    source.open()
    got: list[Message] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(source.poll(max_messages=1000, timeout=0.2))
    finally:
        source.close()
    return got


def test_one_trace_from_producer_through_redis_to_the_consumer(
    redis_url: str, streams: dict[str, str], tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    propagator = TraceContextTextMapPropagator()
    producer_tracer = provider.get_tracer("producer")

    # a traced producer: one span per event, its traceparent in the Redis entry's headers
    records, producer_spans = [], {}
    for i in range(40):
        value = b"not json" if i == 7 else orjson.dumps({"event_id": f"e{i}", "amount": i * 20.0})
        span = producer_tracer.start_span(f"produce e{i}", kind=SpanKind.PRODUCER)
        carrier: dict[str, str] = {}
        propagator.inject(carrier, context=set_span_in_context(span))
        span.end()
        producer_spans[i] = span.get_span_context()
        records.append(
            OutRecord(value=value, headers=[(k, v.encode()) for k, v in carrier.items()])
        )
    sink = open_sink(redis_url, topic=streams["events"], options={})
    sink.open()
    sink.send(records)
    sink.flush(timeout=10)
    sink.close()

    spec = pipeline_spec_from_dict(
        {
            "name": "traced",
            "model": "fraud:1",
            "source": {"url": redis_url, "topic": streams["events"], "group": "traced"},
            "outputs": [{"url": redis_url, "topic": streams["scores"]}],
            "dead_letter": {"url": redis_url, "topic": streams["dlq"]},
            "id_field": "event_id",
            "tracing": {"sample_ratio": 0.0},  # only what the producer sampled (all)
            "feedback": {"url": redis_url, "topic": streams["labels"], "label_field": "y"},
        }
    )
    service = InferenceService(
        Threshold(),
        schema=SCHEMA,
        inputs=["amount"],
        config=ReleaseConfig(threshold=0.5),
        release="fraud:1",
        release_digest="d" * 64,
    )
    worker = Worker(
        spec,
        service=service,
        source=open_source(redis_url, topic=streams["events"], group="traced", options={}),
        outputs=[open_sink(redis_url, topic=streams["scores"], options={})],
        dead_letter=open_sink(redis_url, topic=streams["dlq"], options={}),
        dedupe=None,
        monitors=build_monitors(spec, service=service, home=tmp_path, tracer_provider=provider),
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    try:
        outputs = read(redis_url, streams["scores"], expected=39)
        (letter,) = read(redis_url, streams["dlq"], expected=1)
        # labels come later, on their own stream
        label_sink = open_sink(redis_url, topic=streams["labels"], options={})
        label_sink.open()
        label_sink.send(
            [
                OutRecord(value=orjson.dumps({"event_id": f"e{i}", "y": int(i * 20.0 >= 500)}))
                for i in range(40)
                if i != 7
            ]
        )
        label_sink.flush(timeout=10)
        label_sink.close()
        assert worker.monitors is not None and worker.monitors.accuracy is not None
        accuracy = worker.monitors.accuracy
        wait_for(lambda: accuracy.stats().joined == 39)
    finally:
        stop.set()
        thread.join()

    # the downstream consumer continues the trace from the output's headers
    consumer_tracer = provider.get_tracer("consumer")
    for message in [*outputs, letter]:
        context = propagator.extract({k: v.decode() for k, v in message.headers})
        consumer_tracer.start_span("consume", context=context, kind=SpanKind.CONSUMER).end()

    spans = list(exporter.get_finished_spans())
    by_id = {s.context.span_id: s for s in spans}

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, span.name
        return by_id[span.parent.span_id]

    consumed = [s for s in spans if s.name == "consume"]
    assert len(consumed) == 40
    producers = {ctx.span_id: i for i, ctx in producer_spans.items()}
    seen = set()
    for span in consumed:
        process = parent(span)
        assert process.name == "traced process"
        produce = parent(process)
        i = producers[produce.context.span_id]
        seen.add(i)
        assert span.context.trace_id == process.context.trace_id == producer_spans[i].trace_id
        stages = {
            s.name
            for s in spans
            if s.parent and s.parent.span_id == process.context.span_id and s.name != "consume"
        }
        if i == 7:
            assert process.attributes["headrace.outcome"] == "dead_letter"  # type: ignore[index]
            assert stages == {"decode", "send", "settle"}
        else:
            assert stages == {
                "decode", "validate", "predict", "postprocess", "send", "settle"
            }  # fmt: skip
    assert seen == set(range(40))

    report = accuracy.report()["fraud:1"]
    assert (report.joined, report.accuracy, report.precision, report.recall) == (39, 1.0, 1.0, 1.0)
    assert report.auc == 1.0
