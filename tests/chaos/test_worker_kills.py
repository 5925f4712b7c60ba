"""SIGKILLs at random moments across two `headrace run` workers in one consumer group.

Each kill picks a worker and a moment at random (seeded; the seed is printed and
``HEADRACE_TEST_SEED`` replays it), kills it with SIGKILL (no drain, no commit) and starts
a new worker in its place at once, while events keep arriving. Afterwards every output
topic record is read back with a bare client:

* nothing is lost: every event has an output;
* repeats stay within the README's bound, at most ``max_in_flight + max_batch`` per kill,
  and every repeat carries its event's idempotency key (a consumer keeping keys drops it);
* with the Redis dedupe store the survivors dropped what they had recorded.

A kill at a random moment can land between a batch's send and its settle: those outputs
are on the wire but recorded nowhere, so no store can know them and they come again.
That window is what the bound covers; the acknowledged-but-uncommitted window the store
closes is pinned by tests/e2e/test_kafka_pipeline.py.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from chaos.faults import PacedProducer, sized
from support.kafka import (
    Harness,
    IdTracker,
    Release,
    WorkerProcess,
    create_topic,
    demo_events,
    output_counts,
    write_pipeline,
)

pytestmark = [pytest.mark.chaos, pytest.mark.kafka]

MAX_BATCH = 512
MAX_IN_FLIGHT = 4096


def test_random_sigkills_across_two_workers_lose_nothing(
    kafka_broker: str,
    redis_url: str,
    release: Release,
    harness: Harness,
    tmp_path: Path,
    seed: int,
) -> None:
    """CI: 30k events at 1.5k/s, 3 kills; long (``HEADRACE_CHAOS_LONG=1``): 200k events at
    2.5k/s, 10 kills. Each kill comes 0.2-2 s (uniform, seeded) after scoring resumed from the
    last one, on a worker chosen at random."""
    count, rate, kills = sized((30_000, 1_500, 3), (200_000, 2_500, 10))
    rng = np.random.default_rng(seed)
    print(f"\nseed {seed}")
    events = demo_events(count, seed=seed % 10_000, malformed_rate=0.0, prefix="kill-")
    source = create_topic(kafka_broker, partitions=4)
    outputs = create_topic(kafka_broker, partitions=4)
    dead = create_topic(kafka_broker, partitions=4)
    name = f"chaos-kills-{uuid.uuid4().hex[:8]}"
    spec = write_pipeline(
        tmp_path / "pipeline.yaml",
        name=name,
        bootstrap=kafka_broker,
        source=source,
        outputs=outputs,
        dead_letter=dead,
        dedupe={"url": redis_url, "ttl_s": 3600},
        max_batch=MAX_BATCH,
        max_in_flight=MAX_IN_FLIGHT,
        # A dead member's partitions move on once its session expires: keep it short.
        source_options={"session.timeout.ms": 3000, "heartbeat.interval.ms": 500},
    )
    reader = harness.reader(kafka_broker, outputs)
    seen = IdTracker(reader)
    producer = PacedProducer(kafka_broker, source)
    started = 0

    def start() -> WorkerProcess:
        nonlocal started
        started += 1
        return harness.worker(spec, label=f"worker-{started}")

    live = [start(), start()]

    def alive() -> None:
        for worker in live:
            worker.check_alive()

    # Live until the last kill: past 80% of the events, a trickle until then.
    producer.start(events.items, rate=rate, hold_at=count * 4 // 5, trickle=200)

    def both_busy() -> bool:
        return all(worker.progress()[0] > 0 for worker in live)

    try:
        reader.wait_for(both_busy, timeout=60, what="both workers consuming", alive=alive)
        killed_at: list[tuple[int, int, float]] = []  # (produced, scored, s since resumed)
        for _ in range(kills):
            # A random moment once scoring goes on again after the last kill's rebalance,
            # so each kill finds work in flight (not a worker still joining).
            floor = seen.count()
            reader.wait_for(
                seen.at_least(floor + MAX_BATCH), timeout=60, what="scoring resumed", alive=alive
            )
            pause = float(rng.uniform(0.2, 2.0))
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline:
                alive()
                reader.poll(0.05)
            victim = int(rng.integers(len(live)))
            live[victim].kill()
            killed_at.append((producer.produced, seen.count(), round(pause, 2)))
            live[victim] = start()
        assert killed_at[-1][0] < count, "the last kill came after the stream ended"
    finally:
        producer.release()

    reader.wait_for(seen.at_least(count), timeout=sized(120, 600), what="every event", alive=alive)
    producer.join()
    finals = [worker.terminate() for worker in live]
    by_id = output_counts(reader.drain())
    missing = set(events.valid_ids) - set(by_id)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    repeats = 0
    for event_id, records in by_id.items():
        keys = {r.headers["headrace-idempotency-key"] for r in records}
        assert keys == {f"{event_id}:{release.digest}".encode()}, (event_id, keys)
        repeats += len(records) - 1
    bound = kills * (MAX_IN_FLIGHT + MAX_BATCH)
    assert repeats <= bound, f"{repeats} repeats after {kills} kills (bound {bound})"
    dropped = sum(stats["deduplicated"] for stats in finals)
    print(
        f"{count:,} events, {kills} SIGKILLs over 2 workers ({started} started): 0 lost, "
        f"{repeats} repeated (bound {bound}), {dropped} dropped by the Redis dedupe store "
        f"in the last two workers; kills at (produced, scored): {killed_at}"
    )
