"""Kafka client settings (chosen by measurement) and the helpers both sides share.

Each client starts from `CONSUMER_DEFAULTS` / `PRODUCER_DEFAULTS`, then applies the
user's ``options`` (any librdkafka setting); `CONSUMER_PINNED` / `PRODUCER_PINNED`, the
settings the delivery promise rests on, cannot be overridden.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from headrace.errors import ConfigError, DependencyMissingError

if TYPE_CHECKING:
    from types import ModuleType

    from confluent_kafka import KafkaError

__all__ = [
    "CONSUMER_DEFAULTS",
    "CONSUMER_PINNED",
    "PRODUCER_DEFAULTS",
    "PRODUCER_PINNED",
    "Start",
]

# One logger for the whole connector (its name predates the split into modules).
log = logging.getLogger("headrace.streams.kafka")
_librdkafka_log = logging.getLogger("headrace.streams.kafka.librdkafka")

Start = int | datetime | None
"""Where a replaying source starts: an offset (on every partition), a time, or `None`
(the group's committed offset, else the beginning)."""

CONSUMER_DEFAULTS: Mapping[str, Any] = {
    "auto.offset.reset": "earliest",
    # Measured against Tansu (benchmarks/kafka_clients.py, 600k events, 4 partitions):
    # librdkafka's defaults stall each partition's fetcher for a second whenever its
    # prefetch queue is full (fetch.queue.backoff.ms=1000): ~128k ev/s; a 10 ms backoff,
    # ~300k ev/s, with a smaller queue (less to discard on pause or rebalance).
    "queued.min.messages": 20_000,
    "fetch.queue.backoff.ms": 10,
    # On Tansu, delivery latency grows with this wait (Kafka answers a waiting fetch as
    # soon as data arrives): p50 ~130 ms at librdkafka's 500 under 5-20k ev/s, ~15-20 ms
    # at 50; lower values slow the broker down with extra fetches.
    "fetch.wait.max.ms": 50,
}
"""Consumer settings a user's ``options`` may override."""

CONSUMER_PINNED: Mapping[str, Any] = {
    # Offsets are committed explicitly, after the sinks acknowledged (at-least-once).
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
}
"""Consumer settings the delivery promise rests on; ``options`` may not change them."""

PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    # Measured against Tansu (benchmarks/kafka_clients.py, medians of two runs): linger
    # 5 ms 390-420k ev/s, 0 ms 300-350k; lz4 on top of that 420-560k (fewer bytes
    # through the broker for little CPU).
    "linger.ms": 5,
    "compression.type": "lz4",
    # Java's partitioner, so keys land on the same partitions as with Java producers.
    "partitioner": "murmur2_random",
}
"""Producer settings a user's ``options`` may override."""

PRODUCER_PINNED: Mapping[str, Any] = {
    # Only failures call back into Python: per-message callbacks cost throughput.
    "delivery.report.only.error": True,
}
"""Producer settings `KafkaSink.flush` relies on; ``options`` may not change them."""

# Keys the connector fills in itself; in ``options`` they would silently break it.
_RESERVED = ("bootstrap.servers", "group.id", "error_cb", "on_delivery")


def _import_kafka(feature: str) -> ModuleType:
    """confluent_kafka, or `DependencyMissingError` naming the extra to install."""
    try:
        import confluent_kafka
    except ImportError as exc:
        raise DependencyMissingError("confluent_kafka", "kafka", feature) from exc
    return confluent_kafka


def _bootstrap(value: str) -> str:
    """``host:port[,host:port]``; a ``kafka://`` prefix is accepted and dropped."""
    servers = value.removeprefix("kafka://").strip().rstrip("/")
    if not servers:
        raise ConfigError(
            f"Kafka bootstrap servers {value!r} are empty: pass 'host:port', e.g. '127.0.0.1:9092'"
        )
    return servers


def _config(
    base: Mapping[str, Any],
    options: Mapping[str, Any] | None,
    pinned: Mapping[str, Any],
    *,
    what: str,
) -> dict[str, Any]:
    """`base` updated with `options`; refuses options that touch pinned or reserved keys."""
    config = dict(base)
    for key, value in (options or {}).items():
        if key in _RESERVED:
            raise ConfigError(
                f"{what} option '{key}' is set by headrace itself: remove it from options "
                "(the bootstrap servers, topic and group are arguments of their own)"
            )
        if key in pinned and str(value).lower() != str(pinned[key]).lower():
            raise ConfigError(
                f"{what} option '{key}={value}' would break at-least-once delivery: "
                f"headrace needs '{key}={str(pinned[key]).lower()}'; remove it from options"
            )
        config[key] = value
    config.update(pinned)
    return config


def _error_text(error: KafkaError | None) -> str:
    return "unknown error" if error is None else f"{error.str()} ({error.name()})"


def _positions(topic: str, offsets: Mapping[int, int]) -> str:
    return ", ".join(f"{topic}[{p}]@{o}" for p, o in sorted(offsets.items()))
