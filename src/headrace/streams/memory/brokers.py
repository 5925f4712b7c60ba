"""An in-process broker with Kafka's shape: a fake users and tests can rely on.

`MemoryBroker` keeps named topics of N partitions, each an append-only list of messages
with offsets ``0, 1, 2, ...``, and consumer groups with a committed offset per
partition. `MemorySource` and `MemorySink` speak the `Source`/`Sink` contract over it, so
a pipeline runs unchanged on ``memory://`` in a test or a demo and on ``kafka://`` in
production.

Brokers are found by name: ``memory://demo/transactions`` is topic ``transactions`` on
``broker("demo")``, created on first use and shared by the whole process (every thread).

Groups behave as Kafka's do, minus the network: the members of a group split the
partitions of a topic round-robin in the order they joined (partition ``p`` goes to
member ``p % n``); when a member joins or leaves, the assignment is recomputed and each
member learns of it at its next `MemorySource.poll`, which first calls its `on_revoke`
callback with the partitions it loses and only then hands them over. A partition's new
owner starts at the group's committed offset, so whatever was delivered but not
committed is delivered again (at-least-once). A member that stops polling without
closing keeps its partitions, as a Kafka member would until its session expired.

Messages are kept for the life of the broker (there is no retention). A broker serves any
number of threads; each source or sink is meant for one thread, as a Kafka client is.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import threading
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

from headrace.errors import CommitRefusedError, ConfigError, SinkError, SourceError
from headrace.streams.base import Message, OutRecord, Partition, RevokeCallback

__all__ = ["MemoryBroker", "MemorySink", "MemorySource", "broker", "partition_for_key"]

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


def _parse_url(
    url: str | None,
    *,
    topic: str | None,
    group: str | None,
    broker: MemoryBroker | None,
    role: str,
) -> tuple[str, str, str | None]:
    """``memory://NAME[/TOPIC][?group=G]`` -> broker name, topic, group."""
    if url is None:
        url = f"memory://{DEFAULT_BROKER if broker is None else broker.name}"
    parsed = urlparse(url)
    if parsed.scheme != "memory":
        raise ConfigError(
            f"{role} URL '{url}' is not a memory:// URL: use memory://BROKER/TOPIC "
            "(e.g. memory://default/events)"
        )
    name = parsed.netloc or DEFAULT_BROKER
    if broker is not None and name != broker.name:
        raise ConfigError(
            f"{role} URL '{url}' names broker '{name}' but broker={broker!r} was passed: "
            "give it in one place"
        )
    query = parse_qs(parsed.query)
    path_topic = parsed.path.strip("/") or None
    url_group = query.get("group", [None])[-1]
    chosen_topic = _one_of("topic", path_topic, topic or None, url=url, role=role)
    if chosen_topic is None:
        raise ConfigError(
            f"{role} URL '{url}' names no topic: use memory://{name}/TOPIC or pass topic=..."
        )
    chosen_group = _one_of("group", url_group, group or None, url=url, role=role)
    return name, chosen_topic, chosen_group


def _one_of(what: str, in_url: str | None, given: str | None, *, url: str, role: str) -> str | None:
    if in_url is not None and given is not None and in_url != given:
        raise ConfigError(
            f"{role} URL '{url}' names {what} '{in_url}' but {what}='{given}' was passed: "
            "give it in one place"
        )
    return given if given is not None else in_url


Start = int | dt.datetime | Literal["earliest", "latest"] | None
"""A parsed ``start`` option: an offset, a time, ``"earliest"``/``"latest"``, or None."""


def _parse_start(start: Any, *, where: str) -> Start:
    """Check a ``start`` option once, at construction, so a typo fails before any work."""
    if start is None:
        return None
    if isinstance(start, str):
        text = start.strip().lower()
        if text in ("", "committed"):
            return None
        if text == "earliest":
            return "earliest"
        if text == "latest":
            return "latest"
        if text.isdigit():
            return int(text)
        try:
            start = dt.datetime.fromisoformat(start.strip())
        except ValueError:
            raise ConfigError(
                f"{where}: start={start!r} is neither an offset, an ISO time, nor "
                "'earliest'/'latest'/'committed'"
            ) from None
    if isinstance(start, dt.datetime):
        return start if start.tzinfo is not None else start.replace(tzinfo=dt.UTC)
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return start
    raise ConfigError(
        f"{where}: start={start!r} must be an offset >= 0, an ISO time (datetime), or "
        "'earliest'/'latest'/'committed'"
    )


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
