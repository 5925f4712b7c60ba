"""Issue 10, defect 1, on a real broker: poison events among good ones, through
`headrace run` on Kafka (Tansu).

Before the fix, each poison kind below made the worker exit 1, and every restart died on
the same event, so its partition never moved again. Now every good event is scored, each
poison event is one dead letter with its original bytes, and the group's committed
offsets reach the end of every partition.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from support.kafka import (
    Producer,
    TopicReader,
    WorkerProcess,
    create_topic,
    demo_events,
    register_fraud_release,
    write_pipeline,
)

PARTITIONS = 2


def _poison(good: dict[str, object]) -> dict[str, bytes]:
    base = orjson.dumps(good)[:-1]  # a valid event, open for one more field

    def with_field(raw: bytes) -> bytes:
        return base + b"," + raw + b"}"

    return {
        "arrays 3000 deep": b"[" * 3000 + b"]" * 3000,
        "objects 1000 deep": b'{"a":' * 1000 + b"1" + b"}" * 1000,
        "event time 1e308": orjson.dumps({**good, "ts": 1e308}),
        "event time Infinity": with_field(b'"ts":Infinity'),
        "event time NaN": with_field(b'"ts":NaN'),
        "event time huge int": with_field(b'"ts":' + b"9" * 400),
        "id lone surrogate": orjson.dumps({**good, "event_id": "x"}).replace(
            b'"event_id":"x"', b'"event_id":"\\ud800"'
        ),
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("kafka-poison") / "home"
    register_fraud_release(home)
    return home


@pytest.fixture
def clients() -> Iterator[list[Producer | TopicReader]]:
    opened: list[Producer | TopicReader] = []
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


def _committed(bootstrap: str, topic: str, group: str) -> list[int]:
    """The group's committed offset of each partition."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = [tp.offset for tp in consumer.committed(parts, timeout=10)]
    finally:
        consumer.close()
    return committed


def test_poison_events_are_dead_letters_and_offsets_move_past_them(
    kafka_broker: str, home: Path, tmp_path: Path, clients: list[Producer | TopicReader]
) -> None:
    events = demo_events(400, seed=5, malformed_rate=0.0, prefix="good-")
    poison = _poison(orjson.loads(events.items[0][1]))
    items = list(events.items)
    for n, value in enumerate(poison.values()):  # spread among the good events
        items.insert(25 + n * 50, (f"k{n}".encode(), value))

    source, outputs, dead = (create_topic(kafka_broker, partitions=PARTITIONS) for _ in "abc")
    name = f"e2e-poison-{uuid.uuid4().hex[:8]}"
    spec = write_pipeline(
        tmp_path / "poison.yaml",
        name=name,
        bootstrap=kafka_broker,
        source=source,
        outputs=outputs,
        dead_letter=dead,
        max_batch=64,
    )
    raw = yaml.safe_load(spec.read_text())
    raw["event_time_field"] = "ts"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))

    producer = Producer(kafka_broker, source)
    clients.append(producer)
    producer.send(items)
    scores = TopicReader(kafka_broker, outputs, partitions=PARTITIONS)
    letters = TopicReader(kafka_broker, dead, partitions=PARTITIONS)
    clients += [scores, letters]

    worker = WorkerProcess(spec, home=home, log_dir=tmp_path, label="poison")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            worker.check_alive()  # before the fix: exited 1 on the first poison event
            scores.poll()
            letters.poll()
            if len(scores.records) >= len(events) and len(letters.records) >= len(poison):
                break
            time.sleep(0.1)
        stats = worker.terminate()
    finally:
        worker.stop()

    assert sorted(r.json()["event_id"] for r in scores.records) == sorted(events.valid_ids)
    got = sorted(base64.b64decode(r.json()["payload"]) for r in letters.records)
    assert got == sorted(poison.values())
    assert all(r.json()["stage"] in ("decode", "validate") for r in letters.records)
    assert (stats["outputs"], stats["dead_letters"]) == (len(events), len(poison))
    # offsets committed past every event, poison ones included (one producer, so each
    # partition's offsets run 0..n-1 and the committed ones add up to the events sent)
    assert sum(_committed(kafka_broker, source, name)) == len(items)
