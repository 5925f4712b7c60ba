"""`MemorySink`: appends records to a `MemoryBroker` topic when flushed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from headrace.errors import ConfigError, SinkError
from headrace.streams.base import OutRecord
from headrace.streams.memory.brokers import MemoryBroker, _named_broker
from headrace.streams.memory.config import _parse_url

__all__ = ["MemorySink"]


class MemorySink:
    """Appends records to a `MemoryBroker` topic when flushed.

    `send` queues records; `flush` appends them all (a keyed record goes to the
    partition `partition_for_key` picks, others round-robin) and they become visible to
    sources at once. `fail_next_flush` makes flushes fail for tests of the at-least-once
    path.

    Parameters
    ----------
    url
        ``memory://BROKER/TOPIC`` (or ``memory://BROKER`` with `topic`; None means the
        `broker` passed, or the ``default`` one).
    topic
        The topic to write to.
    options
        ``partitions``: the partition count to create the topic with if it is new.
    broker
        Write to this broker instead of the registered one the URL names.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        topic: str | None = None,
        options: Mapping[str, Any] | None = None,
        broker: MemoryBroker | None = None,
    ) -> None:
        name, self.topic, _ = _parse_url(
            url, topic=topic, group=None, broker=broker, role="MemorySink"
        )
        self.broker = broker if broker is not None else _named_broker(name)
        self.url = f"memory://{self.broker.name}/{self.topic}"
        options = dict(options or {})
        partitions = options.pop("partitions", None)
        if options:
            raise ConfigError(
                f"MemorySink {self.url}: unknown options {sorted(options)}; "
                "the only one is 'partitions'"
            )
        if partitions is not None:
            self.broker.create_topic(self.topic, partitions=int(partitions))
        self._pending: list[OutRecord] = []
        self._failures = 0
        self._open = False

    def __repr__(self) -> str:
        return f"MemorySink({self.url!r})"

    def open(self) -> None:
        """Make the topic if it is new (with the broker's default partition count)."""
        self.broker.partitions(self.topic)
        self._open = True

    def send(self, records: Sequence[OutRecord]) -> None:
        """Queue `records`; nothing is visible to sources before `flush`."""
        if not self._open:
            raise SinkError(f"{self!r} is not open: call open() before send()")
        self._pending.extend(records)

    def flush(self, *, timeout: float) -> None:
        """Append every queued record to the topic (instantly, so `timeout` never runs out).

        Raises
        ------
        SinkError
            A failure was injected (`fail_next_flush` here or on the broker); the queued
            records are discarded, as if the broker had lost them.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        if self._failures > 0 or self.broker._take_flush_failure(self.topic):
            self._failures = max(0, self._failures - 1)
            raise SinkError(
                f"{len(pending)} records to {self.url} were not acknowledged (injected "
                "failure): do not commit the batch; its events will be redelivered"
            )
        self.broker.append(self.topic, pending)

    def fail_next_flush(self, *, times: int = 1) -> None:
        """Make this sink's next `times` flushes fail (see `MemoryBroker.fail_next_flush`)."""
        self._failures += times

    @property
    def pending(self) -> int:
        """How many records were sent but not flushed yet."""
        return len(self._pending)

    def close(self) -> None:
        """Flush what is pending (best effort: an injected failure drops it); idempotent."""
        if self._open:
            self._open = False
            try:
                self.flush(timeout=0)
            except SinkError:
                pass  # best effort, as the contract says: the caller did not commit these
