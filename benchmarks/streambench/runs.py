"""The timed runs: throughput over a pre-filled topic, latency with events paced."""

from __future__ import annotations

import collections
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from streambench.broker import Reader, create_topic, producer, stop_process
from streambench.contenders import Env, Job
from streambench.data import COMMON_RATE, PACED_BASE, WARM_BASE, encode


@dataclass
class Results:
    """events/s per contender (one per repeat), and latency percentiles."""

    rates: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    latency: dict[str, dict[str, float]] = field(default_factory=dict)


@contextmanager
def running(env: Env, job: Job, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            env.command(job), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def dead_letters(env: Env, topic: str, kind: str) -> None:
    reader = Reader(env.bootstrap, topic, 1)
    reader.wait(0, timeout=5, idle=1.0)
    count = len(reader.close()[0])
    if count:
        print(f"    warning: {kind} wrote {count} dead letters", flush=True)


def throughput_run(
    env: Env, kind: str, source: str, count: int, *, profile: Path | None = None
) -> float:
    """events/s over the first `count` outputs of a fresh group reading `source`."""
    output = create_topic(env.bootstrap, env.partitions, "out")
    dead = create_topic(env.bootstrap, 1, "dlq")
    job = Job(kind, source, output, f"g-{uuid.uuid4().hex[:8]}", dead, max_events=count)
    log = env.root / f"{kind}.log"
    spy: subprocess.Popen[bytes] | None = None
    with running(env, job, log) as proc:
        if profile is not None and env.py_spy is not None:
            # From the start: samples before the first batch are cut off when reading.
            spy = subprocess.Popen(
                [env.py_spy, "record", "--pid", str(proc.pid), "--rate", "500", "--idle"]
                + ["--nonblocking", "--format", "speedscope", "-o", str(profile)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            code = proc.wait(timeout=120 + count / 300)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{kind} did not finish {count} events in time; see {log}") from None
        if code != 0:
            raise RuntimeError(f"{kind} exited with {code}; see {log}")
    if spy is not None:
        spy.wait(timeout=60)
    reader = Reader(env.bootstrap, output, env.partitions)
    got = reader.wait(count, timeout=60, idle=1.0)
    stamps = np.sort(reader.close()[0])[:count]
    if got < count:
        raise RuntimeError(f"read {got} of {count} outputs of {kind}; see {log}")
    dead_letters(env, dead, kind)
    return (count - 1) * 1000.0 / max(1, int(stamps[-1] - stamps[0]))


def latency_plan(kinds: list[str], results: Results) -> list[tuple[str, str, float, int | None]]:
    """(label, contender, events/s, fetch.wait.max.ms) of each latency run.

    Each contender at half of its median throughput, with its own consumer settings;
    then each at `COMMON_RATE`, where no contender is near its limit, with its own
    settings and with ``fetch.wait.max.ms=10`` (Tansu holds a fetch that long even when
    records arrive meanwhile, so at light load this setting decides the latency).
    """
    half = {k: statistics.median(results.rates[k]) / 2 for k in kinds}
    plan: list[tuple[str, str, float, int | None]] = [(k, k, half[k], None) for k in kinds]
    common = [k for k in kinds if half[k] * 2 > COMMON_RATE * 1.3]
    plan += [(f"{k} @ {COMMON_RATE:,}/s", k, COMMON_RATE, None) for k in common]
    plan += [(f"{k} @ {COMMON_RATE:,}/s, fetch.wait=10", k, COMMON_RATE, 10) for k in common]
    return plan


def latency_run(
    env: Env,
    kind: str,
    rate: float,
    seconds: float,
    rows: np.ndarray,
    *,
    fetch_wait_ms: int | None = None,
) -> dict[str, float]:
    """p50/p99/max (ms) of output time - event time with events paced at `rate`/s."""
    source = create_topic(env.bootstrap, env.partitions, "paced")
    output = create_topic(env.bootstrap, env.partitions, "out")
    dead = create_topic(env.bootstrap, 1, "dlq")
    group = f"g-{uuid.uuid4().hex[:8]}"
    job = Job(kind, source, output, group, dead, fetch_wait_ms=fetch_wait_ms)
    log = env.root / f"{kind}-latency.log"
    total = max(100, int(rate * seconds))
    payloads = [encode(PACED_BASE + i, rows[i % len(rows)].tolist()) for i in range(total)]
    keys = [str(PACED_BASE + i).encode() for i in range(total)]
    sent = np.zeros(total, dtype=np.int64)
    out = producer(env.bootstrap, **{"linger.ms": 1})
    with running(env, job, log) as proc:
        # Warm-up until the first output: joined, model loaded, first batch out. The
        # reader stops before the paced run so that it takes no CPU from the contender.
        warmup = Reader(env.bootstrap, output, env.partitions)
        warm = 0
        deadline = time.monotonic() + 120
        while not warmup.stamps:
            if proc.poll() is not None or time.monotonic() > deadline:
                warmup.close()
                raise RuntimeError(f"{kind} produced no output in time; see {log}")
            value = encode(WARM_BASE + warm, rows[warm % len(rows)].tolist())
            out.produce(source, value, str(WARM_BASE + warm).encode())
            out.flush(5)
            warm += 1
            time.sleep(0.1)
        warmup.wait(warm, timeout=30, idle=0.5)
        warmup.close()
        produce, clock, now = out.produce, time.perf_counter, time.time
        started = clock()
        i = 0
        while i < total:
            due = min(total, int((clock() - started) * rate) + 1)
            while i < due:
                stamp = int(now() * 1000)
                produce(source, payloads[i], keys[i], timestamp=stamp)
                sent[i] = stamp
                i += 1
            out.poll(0)
            time.sleep(0.001)
        achieved = total / (clock() - started)
        out.flush(30)
        reader = Reader(env.bootstrap, output, env.partitions)
        reader.wait(warm + total, timeout=60 + seconds * 2)
        stamps, values = reader.close()
    latency = np.full(total, np.nan)
    for stamp, value in zip(stamps.tolist(), values, strict=True):
        index = int(orjson.loads(value)["event_id"]) - PACED_BASE
        if 0 <= index < total and np.isnan(latency[index]):
            latency[index] = stamp - sent[index]
    got = latency[~np.isnan(latency)]
    p50, p99 = np.percentile(got, [50, 99])
    return {
        "rate": achieved,
        "events": total,
        "missing": float(total - len(got)),
        "p50": float(p50),
        "p99": float(p99),
        "max": float(got.max()),
    }
