"""Kafka sources and sinks on confluent-kafka (librdkafka).

`KafkaSource` is one member of a consumer group: it reads a topic, hands out `Message`s
in micro-batches (``consume``), and commits offsets synchronously, only when told to,
so an event's offset is committed only after its outputs were acknowledged
(at-least-once). `KafkaSink` produces with ``acks=all`` and idempotence on, and its
`KafkaSink.flush` says whether every record sent so far was acknowledged.

Settings: each class starts from `CONSUMER_DEFAULTS` / `PRODUCER_DEFAULTS` (chosen by
measurement against the test broker, see ``benchmarks/kafka_clients.py``), then applies
the user's ``options`` (any librdkafka setting). The few settings the delivery promise
rests on (`CONSUMER_PINNED`, `PRODUCER_PINNED`) cannot be overridden.

Replay: ``KafkaSource(..., start=1200)`` or ``start=datetime(...)`` reads every partition
from that offset or time the first time the source is assigned it, instead of from the
group's committed offset; `KafkaSource.seek_to_offset` and `KafkaSource.seek_to_time`
move a running source the same way. ``headrace replay --from OFFSET|ISO-TIME`` builds
its source with ``start``.

`probe_kafka` checks, from metadata only, that the broker answers and the topic exists
(``headrace doctor``).

librdkafka retries an unreachable broker forever; these classes bound that where a
caller waits for the broker: `KafkaSource.open`, `KafkaSink.open`, a source's polls
until its first partition assignment, and `KafkaSink.flush` raise
`StreamUnavailableError` naming the bootstrap servers. Once a source has had its
partitions, a broker outage is logged and librdkafka reconnects on its own.
"""

from __future__ import annotations

from headrace.streams.kafka.config import (
    CONSUMER_DEFAULTS,
    CONSUMER_PINNED,
    PRODUCER_DEFAULTS,
    PRODUCER_PINNED,
    Start,
)
from headrace.streams.kafka.probe import probe_kafka
from headrace.streams.kafka.sink import KafkaSink
from headrace.streams.kafka.source import KafkaSource

__all__ = [
    "CONSUMER_DEFAULTS",
    "CONSUMER_PINNED",
    "PRODUCER_DEFAULTS",
    "PRODUCER_PINNED",
    "KafkaSink",
    "KafkaSource",
    "Start",
    "probe_kafka",
]
