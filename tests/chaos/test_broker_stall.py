"""The Kafka broker stalled (SIGSTOP) under two live workers, then resumed (SIGCONT).

The stall outlasts the group's session timeout, so the workers' sessions expire under
them, their commits are refused and the group rebalances once the broker is back: the
workers must recover on their own, without a restart, and lose nothing. Refused commits
only mean repeats (same idempotency keys), at most what each worker had in flight.

Not covered here: the broker killed and restarted. The test broker (Tansu) keeps its
data in memory (its PostgreSQL storage is not compiled into the packaged build), so a
restart loses every topic; no worker can make up for that. See docs/guarantees.md.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from chaos.faults import Harness, IdTracker, Release, sized
from support.kafka import Tansu, create_topic, demo_events, output_counts, write_pipeline

pytestmark = [pytest.mark.chaos, pytest.mark.kafka]

MAX_BATCH = 512
MAX_IN_FLIGHT = 4096


def test_two_workers_recover_on_their_own_after_the_broker_stalled(
    private_broker: Tansu, release: Release, harness: Harness, tmp_path: Path
) -> None:
    """CI: 30k events at 2k/s, stalled 8 s; long (``HEADRACE_CHAOS_LONG=1``): 150k events at
    2.5k/s, stalled 8 s, three times."""
    count, rate, stalls = sized((30_000, 2_000, 1), (150_000, 2_500, 3))
    stall_s = 8.0  # longer than the session timeout (6 s): the group falls apart
    bootstrap = private_broker.bootstrap
    events = demo_events(count, seed=31, malformed_rate=0.0, prefix="stall-")
    source = create_topic(bootstrap, partitions=4)
    outputs = create_topic(bootstrap, partitions=4)
    dead = create_topic(bootstrap, partitions=4)
    spec = write_pipeline(
        tmp_path / "pipeline.yaml",
        name=f"chaos-stall-{uuid.uuid4().hex[:8]}",
        bootstrap=bootstrap,
        source=source,
        outputs=outputs,
        dead_letter=dead,
        max_batch=MAX_BATCH,
        max_in_flight=MAX_IN_FLIGHT,
    )
    reader = harness.reader(bootstrap, outputs)
    seen = IdTracker(reader)
    producer = harness.producer(bootstrap, source)
    workers = [harness.worker(spec, label="first"), harness.worker(spec, label="second")]

    def alive() -> None:
        for worker in workers:
            worker.check_alive()

    producer.start(events.items, rate=rate)
    reader.wait_for(
        lambda: all(w.progress()[0] > 0 for w in workers),
        timeout=60,
        what="both workers consuming",
        alive=alive,
    )
    for _ in range(stalls):
        floor = seen.count()
        reader.wait_for(seen.at_least(floor + 1_000), timeout=60, what="scoring", alive=alive)
        private_broker.pause()
        try:
            deadline = time.monotonic() + stall_s
            while time.monotonic() < deadline:
                alive()
                time.sleep(0.2)
        finally:
            private_broker.resume()
        assert seen.count() < count, "the stall came too late to be mid-stream"
    reader.wait_for(seen.at_least(count), timeout=sized(120, 300), what="every event", alive=alive)
    producer.join()
    finals = [worker.terminate() for worker in workers]
    by_id = output_counts(reader.drain())
    assert set(by_id) == set(events.valid_ids), "events lost"
    repeats = sum(len(records) - 1 for records in by_id.values())
    bound = stalls * len(workers) * (MAX_IN_FLIGHT + MAX_BATCH)
    assert repeats <= bound
    dropped = sum(stats["deduplicated"] for stats in finals)
    print(
        f"\nbroker stalled {stalls}x{stall_s:.0f}s under {count:,} events, 2 workers: 0 lost, "
        f"{repeats} repeated (bound {bound}), {dropped} dropped by the workers' memory dedupe"
    )
