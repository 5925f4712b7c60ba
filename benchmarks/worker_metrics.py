"""What the worker's Prometheus metrics cost: `Worker.process` with and without them.

Usage::

    .venv/bin/python benchmarks/worker_metrics.py [--batches 40] [--repeat 15]

In this process, without Kafka, like the stage costs of ``stream_throughput.py``: the
benchmark's scikit-learn ``LogisticRegression`` (20 features) registered in a temporary
SQLite registry, 512-event batches of its JSON events (with broker timestamps, so the
end-to-end histogram takes every event), sources and sinks that do nothing, no dedupe
store. Two workers over the same batches, one with `WorkerMetrics`, one without,
batch by batch in turns, ``--repeat`` times, timed in CPU time of the main thread (other
work on the machine is not counted); the median microseconds per event of each and the
median of their paired differences are printed. Then the parts on their own: one
`WorkerMetrics.observe_batch` call, the end-to-end histogram taking 512 values in one
numpy call against prometheus-client's `Histogram.observe` called 512 times, and one
scrape (the text exposition of a worker's registry). Nothing asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # streambench, when run as a file

from streambench.data import BATCH, encode, make_data, registry_for, train_and_register


class _Null:
    """A source and sink that accept everything at once."""

    url = "null://"
    topic = "in"

    def send(self, records: Any) -> None: ...
    def flush(self, *, timeout: float) -> None: ...
    def commit(self, messages: Any) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


def _median_us(fn: Callable[[], Any], *, repeat: int, per: int) -> float:
    """Median CPU microseconds (this thread) of `fn`, divided by `per`."""
    times = []
    for _ in range(repeat):
        started = time.thread_time_ns()
        fn()
        times.append((time.thread_time_ns() - started) / 1000 / per)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    from prometheus_client import CollectorRegistry, Histogram

    from headrace.inference.loading import load_service
    from headrace.monitoring.metrics import (
        LATENCY_BUCKETS,
        WorkerMetrics,
        exposition,
        new_registry,
    )
    from headrace.pipeline import Worker, pipeline_spec_from_dict
    from headrace.pipeline.build import tune_worker_process
    from headrace.streams.base import Message

    events = args.batches * BATCH
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        x, y, rows = make_data(events)
        train_and_register(root, x, y)
        with registry_for(root) as registry:
            service = load_service(registry, "bench-lr@champion")
    tune_worker_process()
    now_ms = int(time.time() * 1000)
    batches = [
        [
            Message(
                value=encode(j * BATCH + i, rows[j * BATCH + i].tolist()),
                topic="in",
                partition=i % 4,
                offset=j * BATCH + i,
                key=b"k",
                timestamp_ms=now_ms - 20,
            )
            for i in range(BATCH)
        ]
        for j in range(args.batches)
    ]
    spec = pipeline_spec_from_dict(
        {
            "name": "bench",
            "model": "bench-lr@champion",
            "source": {"url": "memory://x", "topic": "in"},
            "outputs": [{"url": "memory://x", "topic": "out"}],
            "id_field": "id",
        }
    )
    null = _Null()
    registry = new_registry()
    metrics = WorkerMetrics(registry, pipeline="bench")

    def worker(with_metrics: bool) -> Any:
        return Worker(
            spec,
            service=service,
            source=null,  # type: ignore[arg-type]
            outputs=[null],  # type: ignore[list-item]
            dead_letter=null,  # type: ignore[arg-type]
            dedupe=None,
            metrics=metrics if with_metrics else None,
        )

    plain, measured = worker(False), worker(True)

    for w in (plain, measured):  # warm up: imports, caches, the first children
        for batch in batches:
            w.process(batch)
    # Batch by batch, alternating which worker goes first, in CPU time of this thread:
    # other work on the machine delays both alike and is not counted.
    clock = time.thread_time_ns
    off: list[float] = []
    on: list[float] = []
    for r in range(args.repeat):
        spent = {id(plain): 0, id(measured): 0}
        for j, batch in enumerate(batches):
            for w in (plain, measured) if (r + j) % 2 == 0 else (measured, plain):
                started = clock()
                w.process(batch)
                spent[id(w)] += clock() - started
        off.append(spent[id(plain)] / 1000 / events)
        on.append(spent[id(measured)] / 1000 / events)
    base, with_metrics = statistics.median(off), statistics.median(on)
    extra = statistics.median(b - a for a, b in zip(off, on, strict=True))

    # The parts on their own.
    latencies = np.full(BATCH, 20.0)
    marks = (0.0, 0.001, 0.0015, 0.0065, 0.0075)

    def observe() -> None:
        for _ in range(1000):
            metrics.observe_batch(
                "bench-lr:1",
                events=BATCH,
                outputs=BATCH,
                deduplicated=0,
                dead_letter_stages=[],
                end_to_end_ms=latencies,
                marks=marks,
            )

    observe_us = _median_us(observe, repeat=args.repeat, per=1000)
    child = metrics.end_to_end.labels("bench", "bench-lr", "bench-lr:1")
    seconds = latencies * 0.001
    numpy_us = _median_us(
        lambda: [child.observe_many(seconds) for _ in range(1000)], repeat=args.repeat, per=1000
    )
    single = Histogram("single_seconds", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    values = seconds.tolist()

    def one_by_one() -> None:
        for _ in range(100):
            for v in values:
                single.observe(v)

    client_us = _median_us(one_by_one, repeat=args.repeat, per=100)
    scrape_us = _median_us(lambda: exposition(registry), repeat=args.repeat, per=1)

    print(
        f"Worker.process, {args.batches} batches of {BATCH} events, no I/O, "
        f"median of {args.repeat}:"
    )
    print(f"  without metrics  {base:7.2f} us/event  (min {min(off):.2f}, max {max(off):.2f})")
    print(
        f"  with metrics     {with_metrics:7.2f} us/event  (min {min(on):.2f}, max {max(on):.2f})"
    )
    print(f"  difference       {extra:+7.2f} us/event  ({extra / base * 100:+.1f}%)")
    print("Parts, per 512-event batch:")
    print(f"  WorkerMetrics.observe_batch            {observe_us:8.1f} us")
    print(f"  end-to-end histogram, one numpy call   {numpy_us:8.1f} us")
    print(f"  prometheus_client Histogram.observe x512 {client_us:6.1f} us")
    print(f"One scrape (text exposition of the worker's registry): {scrape_us:.0f} us")


if __name__ == "__main__":
    main()
