"""The contract every source and sink keeps, whatever the broker.

A worker polls a `Source` for a batch of `Message`s, turns them into `OutRecord`s, sends
those to every `Sink`, waits until each sink has acknowledged them (`Sink.flush`), and
only then commits the batch (`Source.commit`). That order is the at-least-once promise:
a crash anywhere before the commit redelivers the batch, never loses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec

__all__ = ["Message", "OutRecord", "Partition", "RevokeCallback", "Sink", "Source"]


class Message(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """One event as a source delivered it.

    Built once per event on the hot path, so it is untracked by the garbage collector
    (``gc=False``: it holds only bytes, strings and ints, never a cycle).

    Parameters
    ----------
    value
        The raw bytes (decoding is the pipeline's job, so undecodable events can be
        dead-lettered with their original bytes).
    topic, partition, offset
        Where it came from: a Kafka topic/partition/offset, a Redis stream and entry id
        (partition 0), a NATS stream sequence, a file and line number.
    key, headers
        Kept as they arrived and carried to outputs and dead letters.
    timestamp_ms
        Event or broker time in epoch milliseconds, when the source knows it.
    """

    value: bytes
    topic: str
    partition: int = 0
    offset: int | str = 0
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = msgspec.field(default_factory=list)
    timestamp_ms: int | None = None

    @property
    def position(self) -> str:
        """``topic[partition]@offset``, for error messages and dead letters."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


class OutRecord(msgspec.Struct, kw_only=True, gc=False):
    """One record for a sink: the payload plus the key and headers to send it with."""

    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = msgspec.field(default_factory=list)


Partition = tuple[str, int]
"""``(topic, partition)``: the unit of ordering and of ownership in a consumer group."""

RevokeCallback = Callable[[list[Partition]], None]
"""Called by a source, inside `poll`, before it gives up partitions in a rebalance."""


@runtime_checkable
class Source(Protocol):
    """Where events come from.

    The runtime calls `open` once, then `poll` in a loop, `commit` after each batch's
    outputs were acknowledged, `pause`/`resume` for backpressure, and `close` once.
    """

    url: str

    def open(self, *, on_revoke: RevokeCallback | None = None) -> None:
        """Connect and subscribe; `on_revoke` is called before partitions are taken away.

        A group with no committed position starts at the beginning of the stream, so
        nothing produced before the first worker joined is skipped.
        """
        ...

    def poll(self, *, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages` messages, waiting at most `timeout` seconds for the first."""
        ...

    def commit(self, messages: Sequence[Message]) -> None:
        """Mark these messages (and everything before them per partition) as processed.

        Called only after every sink acknowledged their outputs. Must be durable when it
        returns: a restart resumes after the last committed message.
        """
        ...

    def pause(self) -> None:
        """Stop fetching (the worker is full); `poll` may still return buffered messages."""
        ...

    def resume(self) -> None:
        """Fetch again after a `pause`."""
        ...

    def close(self) -> None:
        """Leave the group and release the connection (without committing anything new)."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Where outputs (or dead letters) go."""

    url: str

    def open(self) -> None:
        """Connect."""
        ...

    def send(self, records: Sequence[OutRecord]) -> None:
        """Queue records for delivery; may return before the broker acknowledged them."""
        ...

    def flush(self, *, timeout: float) -> None:
        """Block until every record sent so far is acknowledged.

        Raise `SinkError` if any failed or `timeout` passed (`StreamUnavailableError` when
        the broker is unreachable), so the caller does not commit its source offsets. A
        failure covers every record sent since the last successful flush.
        """
        ...

    def close(self) -> None:
        """Flush what is pending (best effort) and release the connection."""
        ...
