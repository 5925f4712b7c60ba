"""The service fixtures themselves work: a broken fixture would hide behind skips."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import numpy as np
import pytest


@pytest.mark.kafka
def test_kafka_broker_round_trips_messages_through_a_group(
    kafka_broker: str, create_kafka_topic: Callable[..., str]
) -> None:
    from confluent_kafka import Consumer, Producer

    # ConfigResource is public API, re-exported without `__all__`, hence the ignore.
    from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

    topic = create_kafka_topic(partitions=2, config={"retention.ms": "3600000"})

    # Tansu describes only explicitly configured topics: the helper must have set them.
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    resource = ConfigResource("topic", topic)
    described = admin.describe_configs([resource])[resource].result(timeout=10)
    assert described["retention.ms"].value == "3600000"
    assert described["cleanup.policy"].value == "delete"

    producer = Producer({"bootstrap.servers": kafka_broker})
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(10)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker,
            "group.id": f"group-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            # A join takes about half the session timeout against Tansu: keep it short.
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    received: dict[bytes, bytes] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            got_key, got_value = message.key(), message.value()
            assert got_key is not None and got_value is not None
            received[got_key] = got_value
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    assert received == sent


@pytest.mark.postgres
def test_postgres_url_is_a_fresh_database(postgres_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            name = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            tables = conn.execute(
                sa.text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ).scalar_one()
            conn.execute(sa.text("CREATE TABLE probe (id integer PRIMARY KEY)"))
    finally:
        engine.dispose()
    assert postgres_url.endswith(f"/{name}")
    assert name.startswith("headrace_test_")
    assert tables == 0


@pytest.mark.redis
def test_redis_url_points_at_a_listening_server(redis_url: str) -> None:
    assert redis_url.startswith("redis://127.0.0.1:")


@pytest.mark.nats
def test_nats_url_points_at_a_listening_server(nats_url: str) -> None:
    assert nats_url.startswith("nats://127.0.0.1:")


def test_rng_is_reproducible_from_the_seed(seed: int, rng: np.random.Generator) -> None:
    assert np.array_equal(rng.random(5), np.random.default_rng(seed).random(5))
