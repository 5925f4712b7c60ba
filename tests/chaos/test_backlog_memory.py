"""A worker started behind a large backlog keeps its memory bounded.

`max_in_flight` bounds what a worker holds (events sent, not settled); the source is
paused at that bound. So working through a backlog of any size must not grow the
worker's memory with the backlog: RSS is sampled from /proc while the worker catches up,
and its growth over the last three quarters of the backlog (after the warm-up: the
model, the client's buffers, the first files) must be small and flat.

The per-worker memory dedupe store is bounded by its own `max_keys` (default 1M ids, which
measured 118 MiB of growth over a 1M backlog, 17 MiB per 100k events, before it is full):
the test keeps it at 20k ids so that any other growth shows.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from chaos.faults import rss_kib, sized
from support.kafka import Harness, IdTracker, create_topic, demo_events, write_pipeline

pytestmark = [pytest.mark.chaos, pytest.mark.kafka]

GROWTH_BOUND_MIB = 64.0  # generous: the flat case grows a few MiB at most
DEDUPE_KEYS = 20_000


def test_rss_stays_flat_while_a_worker_works_through_a_backlog(
    kafka_broker: str, harness: Harness, tmp_path: Path
) -> None:
    """CI: a 100k-event backlog; long (``HEADRACE_CHAOS_LONG=1``): 1M events."""
    count = sized(100_000, 1_000_000)
    events = demo_events(count, seed=51, malformed_rate=0.0, prefix="backlog-")
    source = create_topic(kafka_broker, partitions=4)
    outputs = create_topic(kafka_broker, partitions=4)
    producer = harness.producer(kafka_broker, source)
    for begin in range(0, count, 100_000):
        producer.send(events.items[begin : begin + 100_000], timeout=300)
    del events
    spec = write_pipeline(
        tmp_path / "pipeline.yaml",
        name=f"chaos-backlog-{uuid.uuid4().hex[:8]}",
        bootstrap=kafka_broker,
        source=source,
        outputs=outputs,
        dead_letter=create_topic(kafka_broker, partitions=4),
        # The per-worker memory dedupe remembers up to max_keys ids (default 1M, about
        # 150 B each): bounded, but it fills over a 1M backlog. Keep it small so that
        # what is measured after the warm-up is the worker's own growth.
        dedupe={"url": "memory://", "max_keys": DEDUPE_KEYS},
    )
    reader = harness.reader(kafka_broker, outputs)
    seen = IdTracker(reader)
    worker = harness.worker(spec, label="worker")
    samples: list[tuple[int, int]] = []  # (outputs read back, RSS KiB)
    while seen.count() < count:
        worker.check_alive()
        samples.append((seen.count(), rss_kib(worker.proc.pid)))
        reader.poll(0.1)
        assert len(samples) < 100_000, "the worker did not get through the backlog"
    samples.append((count, rss_kib(worker.proc.pid)))
    stats = worker.terminate(timeout=60)
    assert stats["outputs"] == count

    done = np.array([s[0] for s in samples], dtype=float)
    rss = np.array([s[1] for s in samples], dtype=float) / 1024.0
    late = done >= count / 4
    assert late.sum() >= 5, "too few RSS samples after the warm-up"
    growth = float(rss[late].max() - rss[late][0])
    slope = float(np.polyfit(done[late], rss[late], 1)[0]) * 100_000  # MiB per 100k events
    print(
        f"\nbacklog of {count:,}: RSS {rss[late][0]:.0f} MiB at a quarter, peak "
        f"{rss.max():.0f} MiB; growth after the warm-up {growth:.1f} MiB, slope "
        f"{slope:.2f} MiB per 100k events ({len(samples)} samples)"
    )
    assert growth < GROWTH_BOUND_MIB
    assert slope < GROWTH_BOUND_MIB / 4
