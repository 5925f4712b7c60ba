"""`KafkaSink`: produces with ``acks=all`` and says at `KafkaSink.flush` what was acknowledged."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from headrace.errors import ConfigError, SinkError, StreamUnavailableError
from headrace.streams.base import OutRecord
from headrace.streams.kafka.config import (
    PRODUCER_DEFAULTS,
    PRODUCER_PINNED,
    _bootstrap,
    _config,
    _error_text,
    _import_kafka,
    _librdkafka_log,
    log,
)

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Producer

__all__ = ["KafkaSink"]

# How long `KafkaSink.send` waits for room when the local producer queue is full.
QUEUE_FULL_TIMEOUT = 30.0


class KafkaSink:
    """Produces records to one Kafka topic.

    Parameters
    ----------
    bootstrap
        The bootstrap servers, ``host:port[,host:port]``.
    topic
        The topic to write.
    options
        librdkafka producer settings overriding `PRODUCER_DEFAULTS`.
    connect_timeout
        Seconds `open` waits for the broker before raising `StreamUnavailableError`.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str,
        options: Mapping[str, Any] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if not topic:
            raise ConfigError("KafkaSink needs a topic: pass topic='predictions'")
        self.bootstrap = _bootstrap(bootstrap)
        self.topic = topic
        self.url = f"kafka://{self.bootstrap}/{topic}"
        self.connect_timeout = connect_timeout
        self._config = _config(PRODUCER_DEFAULTS, options, PRODUCER_PINNED, what="KafkaSink")
        self._producer: Producer | None = None
        self._failed = 0
        self._first_failure: str | None = None
        self._fatal: str | None = None
        self._down = False

    def open(self) -> None:
        """Create the producer and check the broker answers within `connect_timeout`."""
        if self._producer is not None:
            return
        kafka = _import_kafka("KafkaSink")
        config = {
            **self._config,
            "bootstrap.servers": self.bootstrap,
            "error_cb": self._on_error,
            "on_delivery": self._on_delivery,
        }
        config.setdefault("logger", _librdkafka_log)
        try:
            producer = kafka.Producer(config)
        except kafka.KafkaException as exc:
            raise ConfigError(
                f"KafkaSink for {self.url}: invalid producer settings: {exc.args[0]}"
            ) from exc
        try:
            producer.list_topics(timeout=self.connect_timeout)
        except kafka.KafkaException as exc:
            raise self._unavailable(f"no metadata: {exc.args[0]}") from exc
        self._producer = producer

    def send(self, records: Sequence[OutRecord]) -> None:
        """Queue `records` for delivery (returns before the broker acknowledged them).

        When the local queue is full, waits for room up to `QUEUE_FULL_TIMEOUT` seconds.
        """
        producer = self._require("send")
        if self._fatal is not None:
            raise self._fatal_error()
        # Typed loosely: our header lists are narrower than the stub's invariant list.
        produce: Callable[..., None] = producer.produce
        topic = self.topic
        for record in records:
            try:
                produce(topic, record.value, record.key, headers=record.headers or None)
            except BufferError:
                self._wait_for_room(producer, record)
        producer.poll(0)  # serve delivery failures and errors without blocking

    def flush(self, *, timeout: float) -> None:
        """Wait until every record sent so far is acknowledged.

        A failure covers everything sent since the last successful `flush`: the caller
        must commit none of it. The failure is then forgotten, so a retry starts afresh.

        Raises
        ------
        SinkError
            A record was refused (the first error and the topic are named), or records
            were still unacknowledged after `timeout` seconds.
        StreamUnavailableError
            Records are unacknowledged and every broker was unreachable.
        """
        producer = self._require("flush")
        remaining = producer.flush(timeout)
        fatal, failed, first = self._fatal, self._failed, self._first_failure
        down = self._down
        self._failed, self._first_failure = 0, None
        if fatal is not None:
            raise self._fatal_error()
        if failed:
            raise SinkError(
                f"{failed} record(s) to {self.url} were not delivered; first error: {first}"
            )
        if remaining:
            if down:
                raise self._unavailable(f"{remaining} record(s) unacknowledged after {timeout:g}s")
            raise SinkError(
                f"{remaining} record(s) to {self.url} were not acknowledged within "
                f"{timeout:g}s: the broker is slow or overloaded; retry, or raise the timeout"
            )
        self._down = False

    def close(self) -> None:
        """Flush what is pending (best effort, up to `connect_timeout`) and disconnect."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        remaining = producer.flush(self.connect_timeout)
        if remaining:
            log.warning(
                "%s: closing with %d record(s) unacknowledged; they are dropped",
                self.url,
                remaining,
            )
            producer.purge()
            producer.poll(0)

    def _wait_for_room(self, producer: Producer, record: OutRecord) -> None:
        deadline = time.monotonic() + QUEUE_FULL_TIMEOUT
        while True:
            producer.poll(0.05)  # delivers queued records' reports, which frees room
            try:
                produce: Callable[..., None] = producer.produce
                produce(self.topic, record.value, record.key, headers=record.headers or None)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise SinkError(
                        f"The producer queue for {self.url} stayed full for "
                        f"{QUEUE_FULL_TIMEOUT:g}s: the broker is slow or unreachable; raise "
                        "queue.buffering.max.messages or flush more often"
                    ) from None

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is None:
            return
        self._failed += 1
        if self._first_failure is None:
            self._first_failure = f"{self.topic}[{message.partition()}]: {_error_text(error)}"

    def _on_error(self, error: KafkaError) -> None:
        name = error.name()
        if error.fatal():
            self._fatal = self._fatal or _error_text(error)
        elif name == "_ALL_BROKERS_DOWN":
            if not self._down:
                log.warning("%s: every Kafka broker is unreachable (%s)", self.url, error.str())
            self._down = True
        elif name != "_TRANSPORT":
            log.warning("%s: %s", self.url, _error_text(error))

    def _fatal_error(self) -> SinkError:
        return SinkError(
            f"Kafka producer for {self.url} failed fatally: {self._fatal}; close the sink and "
            "open a new one (records sent since the last flush are not delivered)"
        )

    def _unavailable(self, detail: str) -> StreamUnavailableError:
        return StreamUnavailableError(
            f"Kafka at {self.bootstrap} is not reachable for topic '{self.topic}' ({detail}): "
            "check the broker is running and the bootstrap address is right"
        )

    def _require(self, action: str) -> Producer:
        if self._producer is None:
            raise SinkError(f"Cannot {action} on {self.url}: call open() first")
        return self._producer
