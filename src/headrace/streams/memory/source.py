"""`MemorySource`: reads a `MemoryBroker` topic as one member of a consumer group."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

from headrace.errors import ConfigError, SourceError
from headrace.streams.base import Message, Partition, RevokeCallback
from headrace.streams.memory.brokers import MemoryBroker, _named_broker
from headrace.streams.memory.config import Start, _parse_start, _parse_url

__all__ = ["MemorySource"]


def _start_offset(start: Start, *, broker: MemoryBroker, topic: str, partition: int) -> int | None:
    """Where a replay starts in one partition: None = the group's committed offset."""
    if start is None or isinstance(start, int):
        return start
    if isinstance(start, dt.datetime):
        return broker.offset_for_time(topic, partition, int(start.timestamp() * 1000))
    return 0 if start == "earliest" else broker.end_offsets(topic)[partition]


class MemorySource:
    """Reads a `MemoryBroker` topic as one member of a consumer group.

    Parameters
    ----------
    url
        ``memory://BROKER/TOPIC?group=GROUP`` (topic and group may instead be passed as
        keywords; ``memory://BROKER`` alone then suffices; None means the `broker`
        passed, or the ``default`` one).
    topic, group
        The topic to read and the consumer group to read it in (required, in the URL or
        here).
    options
        ``start``: where to begin instead of the group's committed offsets (a replay),
        applied the first time this member is assigned each partition: an offset, a
        `datetime` or ISO time (the first message at or after it), ``"earliest"`` or
        ``"latest"``; commits then move the group's offsets from there, backwards too.
        ``partitions``: the partition count to create the topic with if it is new.
    broker
        Read from this broker instead of the registered one the URL names.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        topic: str | None = None,
        group: str | None = None,
        options: Mapping[str, Any] | None = None,
        broker: MemoryBroker | None = None,
    ) -> None:
        name, self.topic, chosen_group = _parse_url(
            url, topic=topic, group=group, broker=broker, role="MemorySource"
        )
        if chosen_group is None:
            raise ConfigError(
                f"MemorySource '{url}' has no consumer group: add ?group=NAME to the URL "
                "or pass group=..."
            )
        self.group: str = chosen_group
        self.broker = broker if broker is not None else _named_broker(name)
        self.url = f"memory://{self.broker.name}/{self.topic}"
        options = dict(options or {})
        self._start = _parse_start(options.pop("start", None), where=f"MemorySource {self.url}")
        partitions = options.pop("partitions", None)
        if options:
            raise ConfigError(
                f"MemorySource {self.url}: unknown options {sorted(options)}; "
                "known ones are 'start' and 'partitions'"
            )
        if partitions is not None:
            self.broker.create_topic(self.topic, partitions=int(partitions))
        self._member: str | None = None
        self._on_revoke: RevokeCallback | None = None
        self._positions: dict[int, int] = {}
        self._started: set[int] = set()
        self._next_partition = 0
        self._paused = False
        self._closed = False

    def __repr__(self) -> str:
        return f"MemorySource({self.url!r}, group={self.group!r})"

    @property
    def assignment(self) -> list[Partition]:
        """The partitions this member owns right now (as of its last `poll`)."""
        return [(self.topic, p) for p in sorted(self._positions)]

    def open(self, *, on_revoke: RevokeCallback | None = None) -> None:
        """Join the group; partitions are assigned at the next `poll`."""
        if self._closed:
            raise SourceError(f"{self!r} was closed: make a new source to read again")
        if self._member is not None:
            return
        self._on_revoke = on_revoke
        self._member = self.broker._join(self.group, self.topic)

    def _rebalance(self, member: str) -> None:
        revoked = self.broker._revocations(self.group, self.topic, member)
        if revoked:
            try:
                if self._on_revoke is not None:
                    self._on_revoke([(self.topic, p) for p in revoked])
            finally:
                for p in revoked:
                    self._positions.pop(p, None)
                self.broker._release(self.group, self.topic, member, revoked)
        for p, committed in self.broker._claim(self.group, self.topic, member).items():
            start = None
            if p not in self._started:
                # `start` positions a partition the first time this member gets it; after
                # a rebalance the committed offset rules, or a replay would restart.
                self._started.add(p)
                start = _start_offset(
                    self._start, broker=self.broker, topic=self.topic, partition=p
                )
            self._positions[p] = committed if start is None else start

    def poll(self, *, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages` from the owned partitions, waiting up to `timeout` seconds.

        Handles a pending rebalance first: `on_revoke` is called with the partitions this
        member loses, then newly assigned ones start at the group's committed offsets.
        """
        member = self._require_open()
        deadline = time.monotonic() + timeout
        while True:
            self._rebalance(member)
            if not self._paused:
                batch = self._fetch(max_messages)
                if batch:
                    return batch
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self.broker._wait(left)

    def _fetch(self, max_messages: int) -> list[Message]:
        owned = sorted(self._positions)
        if not owned or max_messages <= 0:
            return []
        # Start at a rotating partition so a busy partition cannot starve the others.
        self._next_partition = (self._next_partition + 1) % len(owned)
        batch: list[Message] = []
        for p in owned[self._next_partition :] + owned[: self._next_partition]:
            got = self.broker.read(
                self.topic, p, self._positions[p], limit=max_messages - len(batch)
            )
            if got:
                self._positions[p] += len(got)
                batch.extend(got)
            if len(batch) >= max_messages:
                break
        return batch

    def commit(self, messages: Sequence[Message]) -> None:
        """Store, per partition, the offset after the last of `messages` for the group."""
        if not messages:
            return
        member = self._require_open()
        offsets: dict[int, int] = {}
        for message in messages:
            if message.topic != self.topic or not isinstance(message.offset, int):
                raise SourceError(
                    f"Cannot commit {message.position} with {self!r}: it reads topic "
                    f"'{self.topic}' (commit each message with the source it came from)"
                )
            offsets[message.partition] = max(offsets.get(message.partition, 0), message.offset + 1)
        self.broker._commit(self.group, self.topic, member, offsets)

    def lag(self) -> int:
        """Messages of this member's partitions after its read positions.

        Positions, not commits: a worker commits in settles, so the backlog still to read
        is what tells whether it keeps up (`MemoryBroker.lag` gives the committed view).
        """
        return sum(self.partition_lag().values())

    def partition_lag(self) -> dict[Partition, int]:
        """`lag` per owned partition."""
        self._require_open()
        ends = self.broker.end_offsets(self.topic)
        return {
            (self.topic, p): max(0, ends[p] - position) for p, position in self._positions.items()
        }

    def pause(self) -> None:
        """Stop fetching; `poll` still handles rebalances and waits out its timeout."""
        self._paused = True

    def resume(self) -> None:
        """Fetch again after `pause`."""
        self._paused = False

    def close(self) -> None:
        """Leave the group (its partitions go to the other members); idempotent."""
        if self._member is not None:
            self.broker._leave(self.group, self.topic, self._member)
            self._member = None
        self._positions.clear()
        self._closed = True

    def _require_open(self) -> str:
        if self._member is None:
            state = "was closed" if self._closed else "is not open"
            raise SourceError(f"{self!r} {state}: call open() before poll() or commit()")
        return self._member
