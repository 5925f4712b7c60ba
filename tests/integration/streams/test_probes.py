"""Endpoint probes against real services: Kafka (Tansu), Redis, NATS JetStream.

Each probe is tried on an endpoint that exists, one that does not, and a closed port,
and checked to leave no trace: nothing created, no rebalance of a live consumer group.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import LOCALHOST, TopicFactory
from headrace.streams import ProbeResult, probe_endpoint
from headrace.streams.base import OutRecord, Partition

# Tansu completes a group join after about half the session timeout: keep it short.
FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}


def failed(result: ProbeResult, *parts: str) -> None:
    assert not result.ok, result
    for part in parts:
        assert part in result.detail, result.detail


def timed(call: Any) -> tuple[ProbeResult, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


# --- Kafka -----------------------------------------------------------------------------


def kafka_topics(bootstrap: str) -> set[str]:
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return set(metadata.topics)


def test_kafka_probe_reports_partitions_of_an_existing_topic(
    kafka_broker: str, create_kafka_topic: TopicFactory
) -> None:
    topic = create_kafka_topic(partitions=3)
    for role in ("source", "sink"):
        result = probe_endpoint(
            f"kafka://{kafka_broker}",
            role=role,  # type: ignore[arg-type]
            topic=topic,
            group="probe",
            options=FAST_GROUP,
        )
        assert result.ok, result
        assert result.endpoint == f"kafka://{kafka_broker} topic '{topic}'"
        assert result.detail.startswith("3 partition(s)")


def test_kafka_probe_of_a_missing_topic_fails_and_does_not_create_it(kafka_broker: str) -> None:
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    for role in ("source", "sink"):
        result = probe_endpoint(f"kafka://{kafka_broker}", role=role, topic=topic)  # type: ignore[arg-type]
        failed(result, f"topic '{topic}' does not exist on {kafka_broker}", "create it")
    # A producer-type client's metadata request lets Tansu create the topic: not ours.
    assert topic not in kafka_topics(kafka_broker)


def test_kafka_probe_of_a_closed_port_fails_within_its_timeout(free_tcp_port: int) -> None:
    pytest.importorskip("confluent_kafka")
    bootstrap = f"{LOCALHOST}:{free_tcp_port}"
    result, took = timed(
        lambda: probe_endpoint(f"kafka://{bootstrap}", role="source", topic="t", timeout=1)
    )
    failed(result, f"no Kafka broker at {bootstrap} answered within 1s", "Connection refused")
    assert took < 3


def test_kafka_probe_does_not_rebalance_a_live_group(
    kafka_broker: str, create_kafka_topic: TopicFactory
) -> None:
    from headrace.streams.kafka import KafkaSource

    topic = create_kafka_topic(partitions=2)
    group = f"live-{uuid.uuid4().hex[:8]}"
    revoked: list[list[Partition]] = []
    source = KafkaSource(
        kafka_broker, topic=topic, group=group, options=FAST_GROUP, connect_timeout=5
    )
    source.open(on_revoke=revoked.append)
    try:
        deadline = time.monotonic() + 30
        while len(source.assignment) < 2 and time.monotonic() < deadline:
            source.poll(max_messages=10, timeout=0.2)
        assert len(source.assignment) == 2
        result = probe_endpoint(
            f"kafka://{kafka_broker}", role="source", topic=topic, group=group, timeout=5
        )
        assert result.ok, result
        # A new member would make the group rebalance within a few heartbeats.
        settle = time.monotonic() + 4
        while time.monotonic() < settle:
            source.poll(max_messages=10, timeout=0.2)
        assert revoked == [] and len(source.assignment) == 2
    finally:
        source.close()


# --- Redis -----------------------------------------------------------------------------


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys: list[str] = []
    client.test_keys = keys  # type: ignore[attr-defined]
    yield client
    if keys:
        client.delete(*keys)
    client.close()
    client.connection_pool.disconnect()


def test_redis_probe_reports_stream_and_group(redis_url: str, redis_client: Any) -> None:
    stream = f"probe-{uuid.uuid4().hex[:8]}"
    redis_client.test_keys.append(stream)
    redis_client.xadd(stream, {"value": b"1"})
    redis_client.xadd(stream, {"value": b"2"})
    redis_client.xgroup_create(stream, "scoring", id="0")
    source = probe_endpoint(redis_url, role="source", topic=stream, group="scoring")
    assert source.ok, source
    assert source.detail == (
        "stream of 2 entries; group 'scoring' has 0 consumer(s) and 0 pending entries"
    )
    other = probe_endpoint(redis_url, role="source", topic=stream, group="other")
    assert other.ok and "group 'other' does not exist yet" in other.detail
    assert probe_endpoint(redis_url, role="sink", topic=stream).detail == "stream of 2 entries"
    groups = redis_client.xinfo_groups(stream)
    assert [g["name"] for g in groups] == [b"scoring"]  # the probe created no group


def test_redis_probe_of_an_absent_stream_creates_nothing(redis_url: str, redis_client: Any) -> None:
    stream = f"probe-{uuid.uuid4().hex[:8]}"
    redis_client.test_keys.append(stream)
    result = probe_endpoint(redis_url, role="source", topic=stream, group="scoring")
    assert result.ok and "does not exist yet: created with group 'scoring'" in result.detail
    assert not redis_client.exists(stream)


def test_redis_probe_of_a_key_that_is_not_a_stream_fails(redis_url: str, redis_client: Any) -> None:
    key = f"probe-{uuid.uuid4().hex[:8]}"
    redis_client.test_keys.append(key)
    redis_client.set(key, "x")
    failed(probe_endpoint(redis_url, role="sink", topic=key), "holds a string, not a stream")


def test_redis_probe_of_a_closed_port_fails_and_redacts(free_tcp_port: int) -> None:
    pytest.importorskip("redis")
    url = f"redis://:hunter2@{LOCALHOST}:{free_tcp_port}/0"
    result, took = timed(lambda: probe_endpoint(url, role="store", timeout=1))
    failed(result, "Redis is unreachable within 1s", "check the server is running")
    assert result.endpoint == f"redis://:***@{LOCALHOST}:{free_tcp_port}/0"
    assert "hunter2" not in result.endpoint + result.detail
    assert took < 3


# --- NATS ------------------------------------------------------------------------------


def nats_streams(url: str) -> set[str]:
    import nats

    async def names() -> set[str]:
        client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
        try:
            return {info.config.name for info in await client.jetstream().streams_info()}
        finally:
            await client.close()

    return asyncio.run(names())


def delete_nats_stream(url: str, name: str) -> None:
    import nats

    async def delete() -> None:
        client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
        try:
            await client.jetstream().delete_stream(name)
        finally:
            await client.close()

    asyncio.run(delete())


def test_nats_probe_of_an_absent_stream_creates_nothing(nats_url: str) -> None:
    subject = f"headrace-probe.{uuid.uuid4().hex[:8]}"
    before = nats_streams(nats_url)
    result = probe_endpoint(nats_url, role="source", topic=subject, group="scoring")
    assert result.ok and "the source creates stream" in result.detail, result
    off = probe_endpoint(nats_url, role="sink", topic=subject, options={"create_stream": False})
    failed(off, "'create_stream' is off", "nats stream add")
    assert nats_streams(nats_url) == before


def test_nats_probe_reports_stream_and_consumer(nats_url: str) -> None:
    from headrace.streams.nats import NatsSink

    subject = f"headrace-probe.{uuid.uuid4().hex[:8]}"
    sink = NatsSink(nats_url, topic=subject, options={"stream_config": {"storage": "memory"}})
    sink.open()
    try:
        sink.send([OutRecord(value=b"1"), OutRecord(value=b"2")])
        sink.flush(timeout=5)
    finally:
        sink.close()
    stream = subject.replace(".", "_")  # the stream the sink created for the subject
    try:
        result = probe_endpoint(nats_url, role="source", topic=subject, group="scoring")
        assert result.ok, result
        assert result.detail == (
            f"stream '{stream}' holds 2 message(s); consumer 'scoring' does not exist yet: "
            "created when the source starts"
        )
        wrong = probe_endpoint(
            nats_url, role="sink", topic=subject, options={"stream": "SOMETHING_ELSE"}
        )
        failed(wrong, f"belongs to stream '{stream}'", "set the 'stream' option")
    finally:
        delete_nats_stream(nats_url, stream)


def test_nats_probe_of_a_closed_port_fails_and_redacts(free_tcp_port: int) -> None:
    pytest.importorskip("nats")
    url = f"nats://probe:s3cret@{LOCALHOST}:{free_tcp_port}"
    result, took = timed(
        lambda: probe_endpoint(url, role="source", topic="a.b", group="g", timeout=1)
    )
    failed(result, "NATS is unreachable within 1s", "Connect call failed")
    assert "s3cret" not in result.endpoint + result.detail
    assert took < 4
