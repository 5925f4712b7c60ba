"""The adaptive batcher alone, in process: what it adds to a lone request, what it buys under load.

Usage::

    .venv/bin/python benchmarks/batcher_latency.py [--requests 2000] [--seconds 3]

The service: a scikit-learn ``LogisticRegression`` on 20 float features behind the real
`InferenceService` (validation, model, post-processing). No HTTP: the numbers isolate
the batcher from the transport.

1. Lone requests (one client, one request at a time): median and p99 of the time from
   ``infer`` to its answer, minus calling ``service.infer`` directly, and the queue wait the
   batcher reports, for ``max_batch_time_ms`` 0 and 2, the model in a worker thread
   (default) and inline.
2. Concurrent clients (16 and 64 coroutines, one row per request, each sending its next
   request when it has an answer): requests/s and mean batch size, batching on
   (``max_batch_size`` 64) against off (``max_batch_size`` 1).

Nothing asserts; results go to benchmarks/README.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

from headrace.inference import InferenceService
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.sklearn import EstimatorModel
from headrace.serving import AdaptiveBatcher, BatchReport

FEATURES = 20


def make_service() -> InferenceService:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10_000, FEATURES))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = EstimatorModel(LogisticRegression().fit(x, y), flavor="sklearn")
    schema = Schema(fields=[Field(name=f"f{i}", type="float") for i in range(FEATURES)])
    return InferenceService(
        model,
        schema=schema,
        inputs=schema.names,
        config=ReleaseConfig(threshold=0.5),
        release="lr:1",
        release_digest="bench",
    )


def columns(rows: int) -> dict[str, np.ndarray]:
    matrix = np.random.default_rng(1).normal(size=(rows, FEATURES))
    return {f"f{i}": matrix[:, i] for i in range(FEATURES)}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def lone(service: InferenceService, *, n: int, batch_ms: float, inline: bool) -> str:
    reports: list[BatchReport] = []
    batcher = AdaptiveBatcher(
        "lr",
        max_batch_time_ms=batch_ms,
        mode="inline" if inline else "thread",
        on_batch=reports.append,
    )
    cols = columns(1)
    through: list[float] = []
    direct: list[float] = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            service.infer(cols, n_rows=1)
            direct.append(time.perf_counter() - started)
            started = time.perf_counter()
            await batcher.infer(service, cols, n_rows=1)
            through.append(time.perf_counter() - started)
    finally:
        await batcher.close()
    added = [t - d for t, d in zip(through, direct, strict=True)]
    waited = [r.waited_s for r in reports]
    return (
        f"batch_time={batch_ms:g} ms {'inline' if inline else 'thread'}: direct p50 "
        f"{pct(direct, 50) * 1e6:.0f} us; through the batcher p50 {pct(through, 50) * 1e6:.0f} "
        f"us p99 {pct(through, 99) * 1e6:.0f} us; added p50 {pct(added, 50) * 1e6:.0f} us; "
        f"queue wait p50 {pct(waited, 50) * 1e6:.0f} us max {max(waited) * 1e6:.0f} us"
    )


async def loaded(service: InferenceService, *, clients: int, seconds: float, size: int) -> str:
    reports: list[BatchReport] = []
    batcher = AdaptiveBatcher("lr", max_batch_size=size, on_batch=reports.append)
    cols = columns(1)
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await batcher.infer(service, cols, n_rows=1)
            done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        await batcher.close()
    elapsed = time.perf_counter() - started
    mean_batch = statistics.fmean(r.rows for r in reports)
    return (
        f"{clients} clients, max_batch_size {size}: {done / elapsed:,.0f} requests/s, "
        f"mean batch {mean_batch:.1f} rows"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    service = make_service()
    print("lone requests:")
    for inline in (False, True):
        for batch_ms in (0.0, 2.0):
            print("  " + await lone(service, n=args.requests, batch_ms=batch_ms, inline=inline))
    print("concurrent clients:")
    for clients in (16, 64):
        for size in (1, 64):
            print("  " + await loaded(service, clients=clients, seconds=args.seconds, size=size))


if __name__ == "__main__":
    asyncio.run(main())
