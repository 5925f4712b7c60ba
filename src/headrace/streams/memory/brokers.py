"""`MemoryBroker`: topics, partitions and consumer groups in this process, found by name.

`broker` gives the process-wide broker a ``memory://NAME`` URL names; `partition_for_key`
is where a keyed record goes (the sink and the broker's `MemoryBroker.append` agree on it).
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence

from headrace.errors import CommitRefusedError, ConfigError
from headrace.streams.base import Message, OutRecord

__all__ = ["MemoryBroker", "broker", "partition_for_key"]

DEFAULT_BROKER = "default"


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition a key goes to: CRC-32 of the key modulo the partition count.

    Stable across processes and Python versions (unlike `hash`), so a key always lands in
    the same partition and its messages keep their order.
    """
    return zlib.crc32(key) % partitions


class _Group:
    """One consumer group on one topic: members in join order, owners, commits."""

    def __init__(self, partitions: int) -> None:
        self.members: list[str] = []
        self.owner: list[str | None] = [None] * partitions
        self.committed: dict[int, int] = {}

    def target(self, member: str) -> set[int]:
        """The partitions `member` should own under the current membership."""
        if member not in self.members:
            return set()
        n = len(self.members)
        index = self.members.index(member)
        return {p for p in range(len(self.owner)) if p % n == index}


class MemoryBroker:
    """Topics, partitions and consumer groups in this process; every method is thread-safe.

    Parameters
    ----------
    name
        How ``memory://NAME/...`` URLs find this broker once it is registered (see
        `broker`); a broker made directly is private to whoever holds it.
    default_partitions
        The partition count of a topic created implicitly (by the first sink or source
        that names it).

    Examples
    --------
    >>> from headrace.streams import MemorySink, MemorySource, OutRecord, broker
    >>> events = broker("doc-example")
    >>> events.create_topic("scores", partitions=2)
    >>> _ = events.append("scores", [OutRecord(value=b'{"n": 1}', key=b"user-1")])
    >>> source = MemorySource("memory://doc-example/scores", group="audit")
    >>> source.open()
    >>> [m.value for m in source.poll(max_messages=10, timeout=0.1)]
    [b'{"n": 1}']
    >>> source.close()
    """

    def __init__(self, name: str = DEFAULT_BROKER, *, default_partitions: int = 1) -> None:
        if default_partitions < 1:
            raise ConfigError(
                f"MemoryBroker '{name}': default_partitions={default_partitions} must be >= 1"
            )
        self.name = name
        self.default_partitions = default_partitions
        # One condition for the whole broker: pollers wait on it, appends and membership
        # changes wake them. A fake needs simplicity more than fine-grained locking.
        self._changed = threading.Condition(threading.RLock())
        self._topics: dict[str, list[list[Message]]] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._failing_flushes: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"MemoryBroker(name={self.name!r}, topics={sorted(self._topics)})"

    # --- topics -------------------------------------------------------------------------

    def create_topic(self, topic: str, *, partitions: int = 1) -> None:
        """Create `topic` with `partitions` partitions; a no-op if it exists with that count.

        Raises
        ------
        ConfigError
            The count is below 1, or the topic exists with another count.
        """
        if partitions < 1:
            raise ConfigError(
                f"Topic '{topic}' on memory://{self.name}: partitions={partitions} must be >= 1"
            )
        with self._changed:
            existing = self._topics.get(topic)
            if existing is None:
                self._topics[topic] = [[] for _ in range(partitions)]
                self._round_robin[topic] = itertools.count()
            elif len(existing) != partitions:
                raise ConfigError(
                    f"Topic '{topic}' on memory://{self.name} already has {len(existing)} "
                    f"partitions, not {partitions}: use another topic name or the same count"
                )

    def _ensure_topic(self, topic: str) -> list[list[Message]]:
        with self._changed:
            if topic not in self._topics:
                self.create_topic(topic, partitions=self.default_partitions)
            return self._topics[topic]

    def topics(self) -> list[str]:
        """The names of every topic, sorted."""
        with self._changed:
            return sorted(self._topics)

    def partitions(self, topic: str) -> int:
        """The partition count of `topic` (creating it with the default count if new)."""
        return len(self._ensure_topic(topic))

    def append(
        self, topic: str, records: Sequence[OutRecord], *, partition: int | None = None
    ) -> list[Message]:
        """Append `records` to `topic` (created if new) and return them as stored messages.

        Parameters
        ----------
        topic
            Where to append.
        records
            The records, in order. A record with a key goes to `partition_for_key`; one
            without goes round-robin.
        partition
            Put every record in this partition instead.

        Raises
        ------
        ConfigError
            `partition` does not exist.
        """
        now_ms = time.time_ns() // 1_000_000
        with self._changed:
            parts = self._ensure_topic(topic)
            if partition is not None and not 0 <= partition < len(parts):
                raise ConfigError(
                    f"Partition {partition} does not exist: topic '{topic}' on "
                    f"memory://{self.name} has {len(parts)} partitions"
                )
            spin = self._round_robin[topic]
            stored = []
            for record in records:
                if partition is not None:
                    p = partition
                elif record.key is not None:
                    p = partition_for_key(record.key, len(parts))
                else:
                    p = next(spin) % len(parts)
                log = parts[p]
                message = Message(
                    value=record.value,
                    topic=topic,
                    partition=p,
                    offset=len(log),
                    key=record.key,
                    headers=list(record.headers),
                    timestamp_ms=now_ms,
                )
                log.append(message)
                stored.append(message)
            if stored:
                self._changed.notify_all()
            return stored

    def read(self, topic: str, partition: int, offset: int, *, limit: int) -> list[Message]:
        """Up to `limit` messages of one partition, from `offset` on (without waiting)."""
        with self._changed:
            log = self._ensure_topic(topic)[partition]
            return log[offset : offset + limit]

    def messages(self, topic: str) -> list[Message]:
        """Every message of `topic`, partition by partition, each in offset order.

        The messages are the broker's own objects, shared with every reader: treat them
        as read-only.
        """
        with self._changed:
            return [m for log in self._ensure_topic(topic) for m in log]

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Partition -> the offset the next appended message will get."""
        with self._changed:
            return {p: len(log) for p, log in enumerate(self._ensure_topic(topic))}

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The first offset of a partition whose timestamp is at or after `timestamp_ms`."""
        with self._changed:
            log = self._ensure_topic(topic)[partition]
            # Appends stamp the wall clock in order, so timestamps never decrease.
            return bisect.bisect_left(log, timestamp_ms, key=lambda m: m.timestamp_ms or 0)

    # --- groups -------------------------------------------------------------------------

    def _group(self, group: str, topic: str) -> _Group:
        key = (group, topic)
        state = self._groups.get(key)
        if state is None:
            state = self._groups[key] = _Group(len(self._ensure_topic(topic)))
        return state

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Partition -> the next offset `group` will read (partitions it never committed
        are absent)."""
        with self._changed:
            return dict(self._group(group, topic).committed)

    def set_committed(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Move `group`'s committed offsets on `topic` (backwards too), e.g. to replay.

        Current owners of those partitions keep their position; a source opened
        afterwards, or a new owner after a rebalance, starts from these offsets.
        """
        with self._changed:
            state = self._group(group, topic)
            for partition, offset in offsets.items():
                self._check_partition(topic, partition)
                state.committed[partition] = offset

    def lag(self, group: str, topic: str) -> int:
        """How many messages of `topic` lie after `group`'s commits (0 = all processed)."""
        with self._changed:
            committed = self._group(group, topic).committed
            return sum(n - committed.get(p, 0) for p, n in self.end_offsets(topic).items())

    def members(self, group: str, topic: str) -> list[str]:
        """The member ids of `group` on `topic`, in join order."""
        with self._changed:
            return list(self._group(group, topic).members)

    def _check_partition(self, topic: str, partition: int) -> None:
        count = len(self._ensure_topic(topic))
        if not 0 <= partition < count:
            raise ConfigError(
                f"Partition {partition} does not exist: topic '{topic}' on "
                f"memory://{self.name} has {count} partitions"
            )

    def _join(self, group: str, topic: str) -> str:
        member = uuid.uuid4().hex
        with self._changed:
            self._group(group, topic).members.append(member)
            self._changed.notify_all()
        return member

    def _leave(self, group: str, topic: str, member: str) -> None:
        with self._changed:
            state = self._group(group, topic)
            if member in state.members:
                state.members.remove(member)
            state.owner = [None if o == member else o for o in state.owner]
            self._changed.notify_all()

    def _revocations(self, group: str, topic: str, member: str) -> list[int]:
        """Partitions `member` owns but should give up."""
        with self._changed:
            state = self._group(group, topic)
            target = state.target(member)
            return [p for p, o in enumerate(state.owner) if o == member and p not in target]

    def _release(self, group: str, topic: str, member: str, partitions: Sequence[int]) -> None:
        with self._changed:
            state = self._group(group, topic)
            for p in partitions:
                if state.owner[p] == member:
                    state.owner[p] = None
            self._changed.notify_all()

    def _claim(self, group: str, topic: str, member: str) -> dict[int, int]:
        """Take the free partitions meant for `member`: partition -> committed offset."""
        with self._changed:
            state = self._group(group, topic)
            claimed = {}
            for p in sorted(state.target(member)):
                if state.owner[p] is None:
                    state.owner[p] = member
                    claimed[p] = state.committed.get(p, 0)
            return claimed

    def _commit(self, group: str, topic: str, member: str, offsets: Mapping[int, int]) -> None:
        with self._changed:
            state = self._group(group, topic)
            # As Kafka does, refuse commits for partitions taken away in a rebalance: the
            # new owner already started from the old commit and must not be overruled.
            lost = sorted(p for p in offsets if state.owner[p] != member)
            if lost:
                where = ", ".join(f"{topic}[{p}]@{offsets[p] - 1}" for p in lost)
                raise CommitRefusedError(
                    f"Cannot commit {where} for group '{group}' on memory://{self.name}: "
                    "the partition was reassigned in a rebalance (commit inside on_revoke); "
                    "its new owner redelivers what was not committed"
                )
            state.committed.update(offsets)

    def _wait(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    # --- failure injection --------------------------------------------------------------

    def fail_next_flush(self, topic: str, *, times: int = 1) -> None:
        """Make the next `times` flushes of any sink writing to `topic` fail.

        A failed flush raises `SinkError` and discards the records it was to deliver,
        as if the broker had lost them: what a test of the at-least-once path needs
        (the caller must not commit, and the redelivered events must be sent again).
        """
        with self._changed:
            self._failing_flushes[topic] = self._failing_flushes.get(topic, 0) + times

    def _take_flush_failure(self, topic: str) -> bool:
        with self._changed:
            left = self._failing_flushes.get(topic, 0)
            if left <= 0:
                return False
            self._failing_flushes[topic] = left - 1
            return True


_BROKERS: dict[str, MemoryBroker] = {}
_BROKERS_LOCK = threading.Lock()


def broker(name: str = DEFAULT_BROKER) -> MemoryBroker:
    """The process-wide broker ``memory://NAME`` names, created on first use.

    Parameters
    ----------
    name
        The broker's name; tests pass a unique one to start from an empty broker.
    """
    return _named_broker(name)


def _named_broker(name: str) -> MemoryBroker:
    # Separate from `broker` because the sources' `broker=` parameter shadows that name.
    with _BROKERS_LOCK:
        found = _BROKERS.get(name)
        if found is None:
            found = _BROKERS[name] = MemoryBroker(name)
        return found
