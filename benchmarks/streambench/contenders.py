"""The contenders, each run as a child process: a bare client loop or a headrace worker."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streambench.data import BATCH, FAST_GROUP, HERE, WAIT_MS, registry_for


@dataclass(frozen=True)
class Job:
    """One contender run: where it reads and writes, and after how many events it stops."""

    kind: str  # bare, headrace-lr, headrace-gbm (-mon: monitoring on), quix-lr, quix-gbm
    input: str
    output: str
    group: str
    dead_letters: str
    max_events: int = 0  # 0: until SIGTERM
    fetch_wait_ms: int | None = None  # consumer fetch.wait.max.ms; None: its default


@dataclass
class Env:
    """What every contender needs to know, fixed for the whole benchmark."""

    bootstrap: str
    partitions: int
    root: Path
    pickles: dict[str, Path]
    quix_python: str | None
    py_spy: str | None = None

    def command(self, job: Job) -> list[str]:
        common = ["--bootstrap", self.bootstrap, "--input", job.input, "--output", job.output]
        common += ["--group", job.group, "--max-events", str(job.max_events)]
        if job.fetch_wait_ms is not None:
            common += ["--fetch-wait-ms", str(job.fetch_wait_ms)]
        if job.kind.startswith("quix-"):
            if self.quix_python is None:
                raise RuntimeError("quix contenders need --quix-python")
            return [
                self.quix_python,
                str(HERE / "quix_peer.py"),
                *common,
                *("--model", str(self.pickles[job.kind.removeprefix("quix-")])),
                *("--state-dir", str(self.root / f"quix-state-{job.group}")),
                *("--session-timeout-ms", str(FAST_GROUP["session.timeout.ms"])),
            ]
        return [
            sys.executable,
            str(HERE / "stream_throughput.py"),
            "contend",
            job.kind,
            *common,
            *("--dead-letters", job.dead_letters, "--root", str(self.root)),
        ]


def contend(args: argparse.Namespace) -> None:
    """The child: run one contender until it processed ``--max-events`` or got SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.kind == "bare":
        bare_loop(args, stop)
    else:
        headrace_worker(args, stop)


def bare_loop(args: argparse.Namespace, stop: threading.Event) -> None:
    """consume -> orjson -> produce, flush, commit: headrace's protocol, no model."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from headrace.streams.kafka import (
        CONSUMER_DEFAULTS,
        CONSUMER_PINNED,
        PRODUCER_DEFAULTS,
        PRODUCER_PINNED,
    )

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            **CONSUMER_DEFAULTS,
            **FAST_GROUP,
            **_fetch_wait(args),
            **CONSUMER_PINNED,
        }
    )
    out = Producer({"bootstrap.servers": args.bootstrap, **PRODUCER_DEFAULTS, **PRODUCER_PINNED})
    consumer.subscribe([args.input])
    loads, dumps, topic = orjson.loads, orjson.dumps, args.output
    produce = out.produce
    done = 0
    try:
        while not stop.is_set() and not (args.max_events and done >= args.max_events):
            batch = consumer.consume(BATCH, WAIT_MS / 1000)
            if not batch:
                continue
            last: dict[int, int] = {}
            now_ms = int(time.time() * 1000)
            for m in batch:
                if m.error() is not None:
                    continue
                event = loads(m.value())
                value = dumps({"event_id": event["id"], "processed_at_ms": now_ms})
                produce(topic, value, m.key())
                last[m.partition()] = m.offset()
            if out.flush(30):
                raise RuntimeError("outputs not acknowledged within 30s")
            offsets = [TopicPartition(args.input, p, o + 1) for p, o in last.items()]
            consumer.commit(offsets=offsets, asynchronous=False)
            done += len(batch)
    finally:
        consumer.close()
        out.flush(10)


def _fetch_wait(args: argparse.Namespace) -> dict[str, int]:
    return {} if args.fetch_wait_ms is None else {"fetch.wait.max.ms": args.fetch_wait_ms}


def headrace_worker(args: argparse.Namespace, stop: threading.Event) -> None:
    """A pipeline worker built from a spec, as ``headrace run`` builds it.

    A ``...-mon`` kind has its monitoring on, as ``headrace run`` would with these spec
    sections: Prometheus metrics, ``tracing: {}`` (its default ratio) into an SDK provider
    whose batch processor exports to a sink that drops the spans (OTLP's cost to the
    process without the network), ``samples: {}`` (default ratio, Parquet files) and
    ``feedback`` from an idle Kafka topic (every prediction kept for its label).
    ``HEADRACE_BENCH_MONITORING`` (comma-separated: metrics, tracing, samples, feedback;
    all by default) switches on only some of them, to find where a cost comes from.
    """
    from headrace.pipeline import build_worker, pipeline_spec_from_dict, tune_worker_process

    kafka = f"kafka://{args.bootstrap}"
    monitored = args.kind.endswith("-mon")
    root = Path(args.root)
    sections: dict[str, object] = {}
    parts = os.environ.get("HEADRACE_BENCH_MONITORING", "metrics,tracing,samples,feedback")
    wanted = set(parts.split(",")) if monitored else set()
    if "tracing" in wanted:
        sections["tracing"] = {}
    if "samples" in wanted:
        sections["samples"] = {"url": f"file://{root / 'samples' / args.group}"}
    if "feedback" in wanted:
        from streambench.broker import create_topic

        sections["feedback"] = {
            "url": kafka,
            "topic": create_topic(args.bootstrap, 1, "labels"),
            "options": dict(FAST_GROUP),
        }
    spec = pipeline_spec_from_dict(
        {
            "name": args.group,
            "model": f"bench-{args.kind.removeprefix('headrace-').removesuffix('-mon')}@champion",
            "source": {
                "url": kafka,
                "topic": args.input,
                "group": args.group,
                "options": {**FAST_GROUP, **_fetch_wait(args)},
            },
            "outputs": [{"url": kafka, "topic": args.output}],
            "dead_letter": {"url": kafka, "topic": args.dead_letters},
            "id_field": "id",
            "batch": {"max_size": BATCH, "max_wait_ms": WAIT_MS},
            **sections,
        }
    )
    metrics, provider = _monitoring(args.group) if monitored else (None, None)
    if "metrics" not in wanted:
        metrics = None
    with registry_for(root) as registry:
        worker = build_worker(
            spec,
            registry=registry,
            home=root / "home",
            metrics=metrics,
            tracer_provider=provider,
        )
    tune_worker_process()  # as `headrace run` does
    stats = worker.run(stop=stop, max_events=args.max_events or None)
    if provider is not None:
        provider.shutdown()
    print(orjson.dumps(stats.summary()).decode(), flush=True)


def _monitoring(pipeline: str) -> tuple[Any, Any]:
    """Worker metrics and a tracer provider whose exported spans are dropped."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from headrace.monitoring.metrics import WorkerMetrics, new_registry

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    return WorkerMetrics(new_registry(), pipeline=pipeline), provider
