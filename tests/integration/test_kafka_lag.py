"""`KafkaSource.partition_lag` on a real broker (Tansu): one entry per owned partition,
summing to `lag`, as `source_lag` hands them to the worker's metrics."""

from __future__ import annotations

import time

from conftest import TopicFactory
from headrace.monitoring.metrics import source_lag
from headrace.streams.base import OutRecord
from headrace.streams.kafka import KafkaSink, KafkaSource

FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}


def test_partition_lag_covers_every_owned_partition(
    kafka_broker: str, create_kafka_topic: TopicFactory
) -> None:
    topic = create_kafka_topic(partitions=2)
    sink = KafkaSink(kafka_broker, topic=topic, connect_timeout=5)
    sink.open()
    try:
        sink.send([OutRecord(value=b"{}", key=str(i).encode()) for i in range(200)])
        sink.flush(timeout=30)
    finally:
        sink.close()

    source = KafkaSource(
        kafka_broker, topic=topic, group="lag-test", options=FAST_GROUP, connect_timeout=5
    )
    assert source.partition_lag() is None  # not open: nothing owned, lag unknown
    source.open()
    try:
        got = []
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            got = source.poll(max_messages=10, timeout=1.0)
        assert got
        lags = source.partition_lag()
        assert lags is not None
        assert set(lags) == {(topic, 0), (topic, 1)}
        assert all(lag >= 0 for lag in lags.values())
        assert sum(lags.values()) <= 200 - len(got)  # Tansu reports ends low, never high
        assert sum(lags.values()) == source.lag()
        assert source_lag(source) == {(topic, str(p)): lag for (_, p), lag in lags.items()}
    finally:
        source.close()
