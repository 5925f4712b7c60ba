"""Redis, the dedupe store, killed and restarted under a running worker.

The stated behaviour (`headrace.pipeline.dedupe`): once the store has answered, an
outage pauses the worker (it retries, backing off) until Redis answers again; it never
treats an unknown id as new, so no repeat escapes, and it never exits, so nothing
crash-loops. Before this suite the first failed call stopped the worker with exit 1.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from chaos.faults import RedisServer, sized
from support.kafka import (
    Harness,
    IdTracker,
    Release,
    create_topic,
    demo_events,
    output_counts,
    write_pipeline,
)

pytestmark = [pytest.mark.chaos, pytest.mark.kafka]


def test_a_store_call_waits_for_redis_to_come_back_and_then_answers(
    private_redis: RedisServer,
) -> None:
    """CI and long form alike: one outage, a second or so."""
    from headrace.pipeline.dedupe import RedisDedupe

    store = RedisDedupe(private_redis.url, namespace=uuid.uuid4().hex, ttl_s=600)
    try:
        store.record(["a"])
        private_redis.kill()
        answer: list[list[bool]] = []
        call = threading.Thread(target=lambda: answer.append(store.seen(["a", "b"])))
        call.start()
        while store.outages == 0:  # the call found Redis gone and is waiting
            assert call.is_alive() or store.outages, "the call returned while Redis was down"
            time.sleep(0.05)
        assert call.is_alive() and not answer
        private_redis.start()
        call.join(60)
        assert not call.is_alive()
        # "a" was acknowledged before the kill (fsync'd): still known, never guessed.
        assert answer == [[True, False]]
        assert store.outages == 1 and store.paused_s > 0
    finally:
        store.close()


def test_a_bounded_wait_gives_up_with_one_line_and_no_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`give_up_after_s` turns a long outage into `StreamUnavailableError`; neither it nor
    the log carries the URL's password."""
    from headrace.errors import StreamUnavailableError
    from headrace.pipeline.dedupe import RedisDedupe

    secret = "s3cr3t-dedupe-pw"  # noqa: S105 - a planted test secret
    server = RedisServer(tmp_path / "redis", password=secret)
    store = RedisDedupe(server.url, namespace=uuid.uuid4().hex, ttl_s=60, give_up_after_s=0.5)
    try:
        store.record(["a"])
        server.kill()
        with pytest.raises(StreamUnavailableError) as failed:
            store.seen(["a"])
        message = str(failed.value)
        assert secret not in message and "\n" not in message
        assert f"redis://:***@127.0.0.1:{server.port}/0" in message
        assert secret not in caplog.text and "pausing until it answers" in caplog.text
        assert store.outages == 1
    finally:
        store.close()
        server.stop()


def test_a_worker_pauses_while_redis_is_down_and_emits_each_event_once(
    kafka_broker: str,
    private_redis: RedisServer,
    release: Release,
    harness: Harness,
    tmp_path: Path,
) -> None:
    """A live stream (CI: 20k events at 4k/s, Redis down 3 s; long: 100k at 5k/s, Redis
    down 20 s): the worker stays up, every event gets exactly one output."""
    count, rate, down_s = sized((20_000, 4_000, 3.0), (100_000, 5_000, 20.0))
    events = demo_events(count, seed=21, malformed_rate=0.0, prefix="redis-down-")
    source = create_topic(kafka_broker, partitions=4)
    outputs = create_topic(kafka_broker, partitions=4)
    dead = create_topic(kafka_broker, partitions=4)
    spec = write_pipeline(
        tmp_path / "pipeline.yaml",
        name=f"chaos-redis-{uuid.uuid4().hex[:8]}",
        bootstrap=kafka_broker,
        source=source,
        outputs=outputs,
        dead_letter=dead,
        dedupe={"url": private_redis.url, "ttl_s": 600},
        max_in_flight=4096,
    )
    reader = harness.reader(kafka_broker, outputs)
    seen = IdTracker(reader)
    producer = harness.producer(kafka_broker, source)
    worker = harness.worker(spec, label="worker")
    producer.start(events.items, rate=rate)
    reader.wait_for(
        seen.at_least(count // 5),
        timeout=60,
        what="outputs before the outage",
        alive=worker.check_alive,
    )
    private_redis.kill()
    deadline = time.monotonic() + down_s
    while time.monotonic() < deadline:
        worker.check_alive()  # before the fix: exit 1 at the first failed call
        reader.poll(0.1)
    before = seen.count()
    private_redis.start()
    assert before < count, "the outage came too late to be mid-stream"
    reader.wait_for(seen.at_least(count), timeout=120, what="every event", alive=worker.check_alive)
    producer.join()
    stats = worker.terminate()
    by_id = output_counts(reader.drain())
    assert set(by_id) == set(events.valid_ids)
    repeats = sum(len(records) - 1 for records in by_id.values())
    assert repeats == 0
    assert stats["outputs"] == count
    assert "answers again" in worker.tail(20_000)
    print(
        f"\nredis down {down_s:.0f}s under {count:,} events: 0 lost, {repeats} repeated, "
        f"{before:,} outputs before the restart"
    )
