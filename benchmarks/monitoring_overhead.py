"""What traces, payload samples and live accuracy cost a stream worker.

A real `Worker` (in-process broker, memory dedupe, a scikit-learn LogisticRegression on 20
float features, 512-event batches) scores the same pre-filled topic with its monitors off
and on at their default shares, contenders interleaved, median of the repeats. The rate
is events per CPU second of the whole process (every thread: the worker's, the span
exporter's, the samples writer's), so other work on a shared machine does not skew it:

- off: no tracing, samples or feedback sections;
- tracing: ``tracing: {}`` (sample_ratio 0.001), an SDK provider with a batch span
  processor exporting to memory (what OTLP costs the worker's thread, without the network);
- samples: ``samples: {}`` (ratio 0.001, PII redacted) writing Parquet to a temp directory;
- accuracy: ``feedback: {...}`` keeping every prediction for a label (the feedback stream
  is idle: the join's cost per label is the feedback thread's, not the scorer's);
- all: the three together.

Also, side by side (``--process``): `Worker.process` + `Worker.settle` over the same
pre-built 512-event batches with no I/O at all (sinks and source that do nothing, the
worst case for monitoring's share), monitoring off (no metrics, no monitors) against on
(Prometheus `WorkerMetrics` and all three monitors at their defaults, span exporter
dropping what it gets), a fresh worker per run, off and on alternating, median of
``--repeat``; events per CPU second of the whole process.

Run: ``.venv/bin/python benchmarks/monitoring_overhead.py [--events 200000] [--repeat 5]
[--process]``
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

N_FEATURES = 20


def _service() -> Any:
    from sklearn.linear_model import LogisticRegression

    from headrace.inference.service import InferenceService
    from headrace.release.config import ReleaseConfig
    from headrace.release.schema import Field, Schema
    from headrace.runtimes.sklearn import EstimatorModel

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50_000, N_FEATURES))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.5, len(x)) > 0).astype(int)
    names = [f"f{i:02d}" for i in range(N_FEATURES)]
    return InferenceService(
        EstimatorModel(LogisticRegression().fit(x, y), flavor="sklearn"),
        schema=Schema(fields=[Field(name=n, type="float") for n in names]),
        inputs=names,
        config=ReleaseConfig(threshold=0.5, labels=["legit", "fraud"]),
        release="bench:1",
        release_digest="d" * 64,
    )


def _payloads(n: int) -> list[bytes]:
    rng = np.random.default_rng(2)
    values = np.round(rng.normal(size=(n, N_FEATURES)), 3).tolist()
    return [
        orjson.dumps({"id": i, **{f"f{j:02d}": v for j, v in enumerate(row)}})
        for i, row in enumerate(values)
    ]


def _dropping_provider() -> Any:
    """An SDK tracer provider whose batch processor exports to a sink that drops spans:
    what OTLP costs the process, without the network (an in-memory exporter would keep
    every span and make each garbage collection slower than the last)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    return provider


def _sections(kind: str, name: str, home: Path) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    if kind in ("tracing", "all"):
        sections["tracing"] = {}
    if kind in ("samples", "all"):
        sections["samples"] = {"url": f"file://{home / kind}"}
    if kind in ("accuracy", "all"):
        sections["feedback"] = {"url": f"memory://{name}/labels", "max_pending": 500_000}
    return sections


def _worker(kind: str, service: Any, payloads: list[bytes], home: Path) -> tuple[Any, Any, str]:
    """A worker over a fresh in-process topic of `payloads`, its tracer provider, its broker."""

    from headrace.pipeline.dedupe import MemoryDedupe
    from headrace.pipeline.observe import build_monitors
    from headrace.pipeline.spec import pipeline_spec_from_dict
    from headrace.pipeline.worker import Worker
    from headrace.streams.base import OutRecord
    from headrace.streams.memory import MemorySink, MemorySource, broker

    name = f"bench-{uuid.uuid4().hex[:8]}"
    memory = broker(name)
    memory.create_topic("events", partitions=4)
    memory.append(
        "events", [OutRecord(value=v, key=str(i % 64).encode()) for i, v in enumerate(payloads)]
    )
    sections = _sections(kind, name, home)
    spec = pipeline_spec_from_dict(
        {
            "name": "bench",
            "model": "bench:1",
            "source": {"url": f"memory://{name}/events", "group": "g"},
            "outputs": [{"url": f"memory://{name}/scores"}],
            "dead_letter": {"url": f"memory://{name}/dlq"},
            "id_field": "id",
            "batch": {"max_size": 512, "max_wait_ms": 5},
            **sections,
        }
    )
    provider = _dropping_provider()
    worker = Worker(
        spec,
        service=service,
        source=MemorySource(f"memory://{name}/events", group="g"),
        outputs=[MemorySink(f"memory://{name}/scores")],
        dead_letter=MemorySink(f"memory://{name}/dlq"),
        dedupe=MemoryDedupe(ttl_s=3600, max_keys=1_000_000),
        monitors=build_monitors(spec, service=service, home=home, tracer_provider=provider),
    )
    return worker, provider, name


def _run(kind: str, service: Any, payloads: list[bytes], home: Path) -> float:
    """Events per CPU second of one whole run."""
    from headrace.streams.memory import brokers as memory_module

    worker, provider, name = _worker(kind, service, payloads, home)
    gc.collect()
    gc.freeze()  # as `headrace run` does after loading
    started = time.process_time()
    stats = worker.run(max_events=len(payloads))
    provider.shutdown()  # exporting what is batched counts too
    cpu = time.process_time() - started
    gc.unfreeze()
    memory_module._BROKERS.pop(name)  # a benchmark's liberty: let the next run start empty
    assert stats.outputs == len(payloads), stats
    return len(payloads) / cpu


class _Capture:
    """Stands in for `Monitors` and keeps the views the worker hands it."""

    def __init__(self) -> None:
        self.views: list[Any] = []

    def open(self) -> None:
        pass

    def on_batch(self, view: Any) -> None:
        self.views.append(view)

    def on_settle(self, start_ns: int) -> None:
        pass

    def close(self) -> None:
        pass


def _hook_cost(kind: str, service: Any, payloads: list[bytes], home: Path) -> float:
    """CPU microseconds per event of the monitors alone: `Monitors.on_batch` and
    `on_settle` (and the samples writer's work, flushed inline) over real batches in a
    tight loop, so the worker's own cost and the machine's noise stay out."""
    from headrace.streams.memory import brokers as memory_module

    worker, provider, name = _worker(kind, service, payloads, home)
    monitors = worker.monitors
    capture = _Capture()
    worker.monitors = capture  # the real views of a real run
    worker.run(max_events=len(payloads))
    views = capture.views
    sampler = monitors.sampler
    events = sum(len(v.messages) for v in views)
    gc.collect()
    started = time.process_time()
    for i, view in enumerate(views):
        monitors.on_batch(view)
        monitors.on_settle(time.time_ns())
        if sampler is not None and i % 200 == 199:
            # the writer thread's share, counted here: it drains every second, about
            # 200 batches of 512 at the ~100k events/s a worker reaches
            sampler.flush()
    if sampler is not None:
        sampler.flush()
    provider.shutdown()
    cpu = time.process_time() - started
    monitors.close()
    memory_module._BROKERS.pop(name)
    return cpu * 1e6 / events


class _Null:
    """A source and sink that do nothing: the worker alone, without I/O."""

    url = "null://"

    def send(self, records: Any) -> None:
        pass

    def flush(self, *, timeout: float) -> None:
        pass

    def commit(self, messages: Any) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


def _process_rate(on: bool, service: Any, batches: list[list[Any]], home: Path) -> float:
    """Events per CPU second of `Worker.process` + `settle` over `batches`, no I/O; `on`:
    metrics and every monitor at its defaults (their threads' CPU included)."""
    from headrace.monitoring.metrics import WorkerMetrics, new_registry
    from headrace.pipeline.dedupe import MemoryDedupe
    from headrace.pipeline.observe import build_monitors
    from headrace.pipeline.spec import pipeline_spec_from_dict
    from headrace.pipeline.worker import Worker
    from headrace.streams.memory import broker
    from headrace.streams.memory import brokers as memory_module

    name = f"bench-{uuid.uuid4().hex[:8]}"
    if on:
        broker(name).create_topic("labels", partitions=1)
    spec = pipeline_spec_from_dict(
        {
            "name": "bench",
            "model": "bench:1",
            "source": {"url": "memory://x", "topic": "in"},
            "outputs": [{"url": "memory://x", "topic": "out"}],
            "id_field": "id",
            **(_sections("all", name, home) if on else {}),
        }
    )
    provider = _dropping_provider() if on else None
    null = _Null()
    worker = Worker(
        spec,
        service=service,
        source=null,  # type: ignore[arg-type]
        outputs=[null],  # type: ignore[list-item]
        dead_letter=null,  # type: ignore[arg-type]
        dedupe=MemoryDedupe(ttl_s=3600, max_keys=1_000_000),
        metrics=WorkerMetrics(new_registry(), pipeline="bench") if on else None,
        monitors=build_monitors(spec, service=service, home=home, tracer_provider=provider)
        if on
        else None,
    )
    monitors = worker.monitors
    if monitors is not None:
        monitors.open()
    gc.collect()
    gc.freeze()
    started = time.process_time()
    for batch in batches:
        worker.process(batch)
        worker.settle()
    if monitors is not None:
        monitors.close()  # the samples written, the feedback reader stopped
    if provider is not None:
        provider.shutdown()  # the spans exported
    cpu = time.process_time() - started
    gc.unfreeze()
    memory_module._BROKERS.pop(name, None)
    return sum(len(b) for b in batches) / cpu


def process_side_by_side(service: Any, payloads: list[bytes], repeat: int) -> None:
    """Monitoring off vs on around `Worker.process`, no I/O, alternating, medians."""
    from headrace.streams.base import Message

    messages = [
        Message(value=v, topic="in", partition=i % 4, offset=i, key=str(i % 64).encode())
        for i, v in enumerate(payloads)
    ]
    batches = [messages[i : i + 512] for i in range(0, len(messages), 512)]
    rates: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        _process_rate(True, service, batches[:10], Path(tmp))  # warm-up
        _process_rate(False, service, batches[:10], Path(tmp))
        for r in range(repeat):
            for on in (False, True) if r % 2 == 0 else (True, False):
                rates["on" if on else "off"].append(_process_rate(on, service, batches, Path(tmp)))
    print(f"Worker.process + settle, no I/O, {len(payloads):,} events, median of {repeat}")
    print("| monitoring | events per CPU s, median (min-max) | CPU us per event |")
    print("|---|---:|---:|")
    for kind, values in rates.items():
        median = statistics.median(values)
        print(
            f"| {kind} | **{median:,.0f}** ({min(values):,.0f}-{max(values):,.0f}) "
            f"| {1e6 / median:.2f} |"
        )
    ratio = statistics.median(rates["on"]) / statistics.median(rates["off"])
    print(f"on / off: **{ratio:.1%}** (target >= 90%)")
    pairs = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    print("on / off per repeat: " + ", ".join(f"{p:.1%}" for p in pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--process", action="store_true", help="only Worker.process, monitoring off vs on"
    )
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # as `headrace run` does
    service = _service()
    payloads = _payloads(args.events)
    if args.process:
        process_side_by_side(service, payloads, args.repeat)
        return
    kinds = ["off", "tracing", "samples", "accuracy", "all"]
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:  # warm-up: imports and first calls stay out of the rates
            _run(kind, service, payloads[:5_000], Path(tmp))
        for r in range(args.repeat):
            for kind in kinds if r % 2 == 0 else reversed(kinds):
                rates[kind].append(_run(kind, service, payloads, Path(tmp)))
        costs = {
            k: [_hook_cost(k, service, payloads, Path(tmp)) for _ in range(3)] for k in kinds[1:]
        }
    base = statistics.median(rates["off"])
    print(f"{args.events:,} events, {args.repeat} repeats, median (min-max) events per CPU second")
    print("| monitors | events per CPU s | vs off |")
    print("|---|---:|---:|")
    for kind in kinds:
        median = statistics.median(rates[kind])
        print(
            f"| {kind} | **{median:,.0f}** ({min(rates[kind]):,.0f}-{max(rates[kind]):,.0f}) "
            f"| {100 * (median / base - 1):+.1f}% |"
        )
    print()
    print(f"CPU per event of the worker with monitors off: {1e6 / base:.2f} us")
    print("| monitors | their CPU per event, us, median of 3 (min-max) | share of the worker's |")
    print("|---|---:|---:|")
    for kind, values in costs.items():
        median = statistics.median(values)
        print(
            f"| {kind} | **{median:.3f}** ({min(values):.3f}-{max(values):.3f}) "
            f"| {100 * median * base / 1e6:.1f}% |"
        )


if __name__ == "__main__":
    main()
