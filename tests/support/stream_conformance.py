"""One conformance suite for every source/sink pair (memory, file, kafka, redis, nats).

A backend's test module subclasses `StreamConformance` and overrides the `backend`
fixture to return an object satisfying `Backend`; every test below then runs against it::

    class TestRedisStream(StreamConformance):
        receive_timeout = 10.0
        unsupported = {"partitions": "a Redis stream is one partition"}

        @pytest.fixture
        def backend(self, redis_url: str) -> Backend:
            return RedisBackend(redis_url)

What every backend must do (the promises the pipeline relies on):

* a sink's records, once `Sink.flush` returned, are readable with their value, key and
  headers, in the order sent (per key, across partitions);
* `Source.poll` returns at most `max_messages` and never blocks much past `timeout`;
* a consumer group that never committed starts at the *beginning* of the topic (a
  pipeline must not skip events that arrived before its first worker; Kafka backends set
  ``auto.offset.reset=earliest``);
* `Source.commit` is durable: a new source in the same group resumes right after the
  committed messages, and everything delivered but not committed is delivered again
  (at-least-once);
* groups are independent: each group sees every message;
* `close` may be called twice, or on a source/sink that was never opened.

Tuning, as class attributes a subclass may override:

* `poll_timeout`: what one `poll` waits (seconds); keep it short;
* `receive_timeout`: how long a test keeps polling for messages it expects (raise it
  for brokers whose group joins take seconds, e.g. Kafka);
* `prompt_slack`: how far past its `timeout` an empty `poll` may return;
* `flush_timeout`: the `timeout` given to `Sink.flush`;
* `unsupported`: capability -> reason, for capabilities the backend does not have
  (see `CAPABILITIES`); the tests needing one are skipped with that reason.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar, Protocol

import orjson
import pytest

from headrace.streams.base import Message, OutRecord, Sink, Source

__all__ = ["CAPABILITIES", "Backend", "StreamConformance", "Streams"]

CAPABILITIES: Mapping[str, str] = {
    "keys": "messages carry a key (`Message.key`) from the sink to the source",
    "headers": "messages carry headers from the sink to the source",
    "partitions": "a topic may have several partitions; keys choose the partition",
    "shared_groups": "several sources in one group split the messages between them",
}
"""Capabilities a backend may lack, each with what it means; keys of `unsupported`."""


class Backend(Protocol):
    """What the suite needs from a backend under test."""

    def new_topic(self, *, partitions: int = 1) -> str:
        """A fresh, empty topic/stream/subject name."""
        ...

    def make_source(self, topic: str, *, group: str) -> Source:
        """A source reading `topic` as consumer group `group` (not yet opened)."""
        ...

    def make_sink(self, topic: str) -> Sink:
        """A sink writing to `topic` (not yet opened)."""
        ...

    def read_all(self, topic: str, *, expected: int, timeout: float) -> list[Message]:
        """Every message on `topic` (waiting up to `timeout` for `expected` of them)."""
        ...

    def produce(
        self, topic: str, values: Sequence[bytes], *, keys: Sequence[bytes] | None = None
    ) -> None:
        """Put raw messages on `topic` (outside the sink under test), acknowledged."""
        ...


class Streams:
    """Makes and opens the sources and sinks of one test; closes them all afterwards.

    Parameters
    ----------
    backend
        The backend under test.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._made: list[Source | Sink] = []

    def source(self, topic: str, *, group: str) -> Source:
        """A source on `topic` in `group`, opened (without a revoke callback)."""
        source = self.backend.make_source(topic, group=group)
        # Registered before `open` so a half-opened source is still closed at teardown.
        self._made.append(source)
        source.open()
        return source

    def sink(self, topic: str) -> Sink:
        """A sink on `topic`, opened."""
        sink = self.backend.make_sink(topic)
        self._made.append(sink)
        sink.open()
        return sink

    def close_all(self) -> None:
        """Close everything made here (closing twice is allowed); re-raise the first error."""
        first: BaseException | None = None
        for item in reversed(self._made):
            try:
                item.close()
            except Exception as exc:  # close the rest before reporting
                first = first or exc
        self._made.clear()
        if first is not None:
            raise first


def payloads(count: int, *, tag: str = "m") -> list[bytes]:
    """`count` distinct one-line JSON payloads: ``{"tag": tag, "n": i}``."""
    return [orjson.dumps({"tag": tag, "n": i}) for i in range(count)]


def new_group() -> str:
    """A consumer group name no other test uses."""
    return f"conformance-{uuid.uuid4().hex[:12]}"


class StreamConformance:
    """Tests every source/sink pair must pass; subclass it and override `backend`."""

    poll_timeout: ClassVar[float] = 0.1
    receive_timeout: ClassVar[float] = 5.0
    prompt_slack: ClassVar[float] = 0.5
    flush_timeout: ClassVar[float] = 10.0
    unsupported: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.unsupported) - set(CAPABILITIES)
        if unknown:
            raise TypeError(
                f"{cls.__name__}.unsupported names unknown capabilities {sorted(unknown)}; "
                f"known ones are {sorted(CAPABILITIES)}"
            )

    # --- fixtures and helpers ---------------------------------------------------------

    @pytest.fixture
    def backend(self) -> Backend:
        """The backend under test: every subclass overrides this fixture."""
        raise NotImplementedError(f"{type(self).__name__} must override the `backend` fixture")

    @pytest.fixture
    def streams(self, backend: Backend) -> Iterator[Streams]:
        """Opens sources and sinks for a test and closes them after it."""
        made = Streams(backend)
        yield made
        made.close_all()

    def require(self, *capabilities: str) -> None:
        """Skip the running test unless the backend has every one of `capabilities`."""
        for capability in capabilities:
            reason = self.unsupported.get(capability)
            if reason is not None:
                pytest.skip(f"{type(self).__name__} lacks '{capability}': {reason}")

    def receive(self, source: Source, *, expected: int, max_messages: int = 100) -> list[Message]:
        """Poll until `expected` messages arrived or `receive_timeout` passed."""
        got: list[Message] = []
        deadline = time.monotonic() + self.receive_timeout
        while len(got) < expected and time.monotonic() < deadline:
            batch = source.poll(max_messages=max_messages, timeout=self.poll_timeout)
            assert len(batch) <= max_messages, (
                f"poll(max_messages={max_messages}) returned {len(batch)} messages"
            )
            got.extend(batch)
        assert len(got) >= expected, (
            f"received {len(got)} of {expected} messages within {self.receive_timeout}s "
            f"(raise `receive_timeout` if the broker is just slow): "
            f"{[m.position for m in got]}"
        )
        return got

    def assert_nothing_more(self, source: Source) -> None:
        """One more `poll` returns nothing: no duplicates, no stray messages."""
        extra = source.poll(max_messages=100, timeout=self.poll_timeout)
        assert extra == [], f"unexpected extra messages: {[m.position for m in extra]}"

    def send(self, sink: Sink, records: Sequence[OutRecord]) -> None:
        """Send `records` and flush them."""
        sink.send(records)
        sink.flush(timeout=self.flush_timeout)

    # --- the protocol -----------------------------------------------------------------

    def test_implements_the_protocols(self, backend: Backend) -> None:
        topic = backend.new_topic()
        source = backend.make_source(topic, group=new_group())
        sink = backend.make_sink(topic)
        assert isinstance(source, Source)
        assert isinstance(sink, Sink)
        assert isinstance(source.url, str) and source.url
        assert isinstance(sink.url, str) and sink.url

    def test_close_without_open_is_harmless(self, backend: Backend) -> None:
        topic = backend.new_topic()
        backend.make_source(topic, group=new_group()).close()
        backend.make_sink(topic).close()

    def test_close_is_idempotent(self, backend: Backend, streams: Streams) -> None:
        topic = backend.new_topic()
        sink = streams.sink(topic)
        self.send(sink, [OutRecord(value=b'{"n": 0}')])
        sink.close()
        sink.close()
        source = streams.source(topic, group=new_group())
        self.receive(source, expected=1)
        source.close()
        source.close()

    # --- sink -> source ---------------------------------------------------------------

    def test_round_trip_preserves_values_in_order(self, backend: Backend, streams: Streams) -> None:
        topic = backend.new_topic()
        values = payloads(20, tag="round-trip")
        self.send(streams.sink(topic), [OutRecord(value=v) for v in values])
        got = self.receive(streams.source(topic, group=new_group()), expected=len(values))
        assert [m.value for m in got] == values
        assert all(m.topic == topic for m in got)

    def test_round_trip_preserves_keys(self, backend: Backend, streams: Streams) -> None:
        self.require("keys")
        topic = backend.new_topic()
        records = [
            OutRecord(value=b'{"n": 0}', key=b"user-1"),
            OutRecord(value=b'{"n": 1}', key=None),
            OutRecord(value=b'{"n": 2}', key=b"\x00\xffbinary"),
        ]
        self.send(streams.sink(topic), records)
        got = self.receive(streams.source(topic, group=new_group()), expected=3)
        assert {m.value: m.key for m in got} == {r.value: r.key for r in records}

    def test_round_trip_preserves_headers(self, backend: Backend, streams: Streams) -> None:
        self.require("headers")
        topic = backend.new_topic()
        headers = [("trace-id", b"4bf92f3577b34da6"), ("content-type", b"application/json")]
        records = [
            OutRecord(value=b'{"n": 0}', headers=headers),
            OutRecord(value=b'{"n": 1}'),
            OutRecord(value=b'{"n": 2}', headers=[("binary", b"\x00\xff")]),
        ]
        self.send(streams.sink(topic), records)
        got = self.receive(streams.source(topic, group=new_group()), expected=3)
        assert {m.value: m.headers for m in got} == {r.value: r.headers for r in records}

    def test_flush_acknowledges_everything_sent(self, backend: Backend, streams: Streams) -> None:
        topic = backend.new_topic()
        sink = streams.sink(topic)
        sink.flush(timeout=self.flush_timeout)  # nothing pending: returns at once
        values = payloads(150, tag="flush")
        for start in range(0, len(values), 50):
            sink.send([OutRecord(value=v) for v in values[start : start + 50]])
        sink.send([])
        sink.flush(timeout=self.flush_timeout)
        got = backend.read_all(topic, expected=len(values), timeout=self.receive_timeout)
        assert [m.value for m in got] == values

    def test_same_key_keeps_its_order(self, backend: Backend, streams: Streams) -> None:
        self.require("keys")
        partitions = 1 if "partitions" in self.unsupported else 3
        topic = backend.new_topic(partitions=partitions)
        keys = [f"user-{k}".encode() for k in range(6)]
        records = [
            OutRecord(value=orjson.dumps({"key": i % len(keys), "seq": i}), key=keys[i % len(keys)])
            for i in range(60)
        ]
        self.send(streams.sink(topic), records)
        got = self.receive(streams.source(topic, group=new_group()), expected=len(records))
        by_key: dict[bytes | None, list[bytes]] = defaultdict(list)
        partitions_of: dict[bytes | None, set[int]] = defaultdict(set)
        for message in got:
            by_key[message.key].append(message.value)
            partitions_of[message.key].add(message.partition)
            assert 0 <= message.partition < partitions, message.position
        for key in keys:
            sent = [r.value for r in records if r.key == key]
            assert by_key[key] == sent, f"messages of key {key!r} arrived out of order"
            assert len(partitions_of[key]) == 1, f"key {key!r} spread over {partitions_of[key]}"

    # --- source -----------------------------------------------------------------------

    def test_source_reads_produced_messages(self, backend: Backend, streams: Streams) -> None:
        topic = backend.new_topic()
        values = payloads(10, tag="produced")
        backend.produce(topic, values)
        source = streams.source(topic, group=new_group())
        assert [m.value for m in self.receive(source, expected=10)] == values
        self.assert_nothing_more(source)

    def test_poll_respects_max_messages(self, backend: Backend, streams: Streams) -> None:
        topic = backend.new_topic()
        values = payloads(10, tag="max")
        backend.produce(topic, values)
        source = streams.source(topic, group=new_group())
        got = self.receive(source, expected=10, max_messages=3)  # asserts every poll <= 3
        assert [m.value for m in got] == values

    def test_poll_on_empty_topic_returns_promptly(self, backend: Backend, streams: Streams) -> None:
        topic = backend.new_topic()
        source = streams.source(topic, group=new_group())
        for _ in range(3):
            started = time.monotonic()
            assert source.poll(max_messages=10, timeout=self.poll_timeout) == []
            elapsed = time.monotonic() - started
            assert elapsed < self.poll_timeout + self.prompt_slack, (
                f"empty poll(timeout={self.poll_timeout}) took {elapsed:.2f}s"
            )

    def test_message_position_names_topic_partition_and_offset(
        self, backend: Backend, streams: Streams
    ) -> None:
        topic = backend.new_topic()
        backend.produce(topic, payloads(5, tag="position"))
        got = self.receive(streams.source(topic, group=new_group()), expected=5)
        seen: set[tuple[int, int | str]] = set()
        for message in got:
            assert message.topic == topic
            assert message.position == f"{topic}[{message.partition}]@{message.offset}"
            assert (message.partition, message.offset) not in seen, message.position
            seen.add((message.partition, message.offset))

    def test_pause_and_resume_lose_nothing(self, backend: Backend, streams: Streams) -> None:
        topic = backend.new_topic()
        values = payloads(8, tag="pause")
        backend.produce(topic, values)
        source = streams.source(topic, group=new_group())
        source.pause()
        buffered = source.poll(max_messages=100, timeout=self.poll_timeout)
        source.resume()
        rest = self.receive(source, expected=len(values) - len(buffered))
        assert [m.value for m in buffered + rest] == values

    # --- commits and groups -----------------------------------------------------------

    def test_commit_then_reopen_resumes_after_the_commit(
        self, backend: Backend, streams: Streams
    ) -> None:
        topic = backend.new_topic()
        values = payloads(6, tag="resume")
        backend.produce(topic, values)
        group = new_group()
        first = streams.source(topic, group=group)
        got = self.receive(first, expected=6)
        first.commit([])  # an empty batch commits nothing and does not fail
        first.commit(got[:3])
        first.close()
        second = streams.source(topic, group=group)
        assert [m.value for m in self.receive(second, expected=3)] == values[3:]
        self.assert_nothing_more(second)

    def test_fully_committed_group_sees_only_new_messages(
        self, backend: Backend, streams: Streams
    ) -> None:
        topic = backend.new_topic()
        backend.produce(topic, payloads(4, tag="old"))
        group = new_group()
        first = streams.source(topic, group=group)
        first.commit(self.receive(first, expected=4))
        first.close()
        new = payloads(2, tag="new")
        backend.produce(topic, new)
        second = streams.source(topic, group=group)
        assert [m.value for m in self.receive(second, expected=2)] == new
        self.assert_nothing_more(second)

    def test_uncommitted_messages_are_redelivered(self, backend: Backend, streams: Streams) -> None:
        topic = backend.new_topic()
        values = payloads(5, tag="redeliver")
        backend.produce(topic, values)
        group = new_group()
        first = streams.source(topic, group=group)
        assert [m.value for m in self.receive(first, expected=5)] == values
        first.close()  # a crash before the commit: nothing was acknowledged
        second = streams.source(topic, group=group)
        assert [m.value for m in self.receive(second, expected=5)] == values
        self.assert_nothing_more(second)

    def test_two_groups_each_see_every_message(self, backend: Backend, streams: Streams) -> None:
        topic = backend.new_topic()
        values = payloads(6, tag="groups")
        backend.produce(topic, values)
        one = streams.source(topic, group=new_group())
        one.commit(self.receive(one, expected=6))
        two = streams.source(topic, group=new_group())
        assert [m.value for m in self.receive(two, expected=6)] == values

    def test_members_of_one_group_share_the_messages(
        self, backend: Backend, streams: Streams
    ) -> None:
        self.require("shared_groups")
        partitions = 1 if "partitions" in self.unsupported else 4
        topic = backend.new_topic(partitions=partitions)
        keyed = "keys" not in self.unsupported
        group = new_group()
        members = [streams.source(topic, group=group), streams.source(topic, group=group)]
        got: dict[int, list[Message]] = {0: [], 1: []}
        sent: list[bytes] = []
        deadline = time.monotonic() + self.receive_timeout
        rounds = 0
        while time.monotonic() < deadline:
            if not (got[0] and got[1]):
                # Keep feeding until both members have work: a member that joined late
                # (a Kafka group join takes seconds) only gets what arrives after it.
                values = payloads(8, tag=f"share-{rounds}")
                keys = [f"k{i}".encode() for i in range(len(values))] if keyed else None
                backend.produce(topic, values, keys=keys)
                sent.extend(values)
                rounds += 1
            # Every member keeps polling (a Kafka member that stops is evicted) and
            # commits what it got, so a rebalance hands committed positions over.
            for index, member in enumerate(members):
                batch = member.poll(max_messages=5, timeout=self.poll_timeout)
                member.commit(batch)
                got[index].extend(batch)
            seen = {m.value for batch in got.values() for m in batch}
            if got[0] and got[1] and seen >= set(sent):
                break
        seen = {m.value for batch in got.values() for m in batch}
        assert got[0] and got[1], (
            f"one member got everything ({len(got[0])} vs {len(got[1])} messages) within "
            f"{self.receive_timeout}s: members of one group must split the work"
        )
        assert seen == set(sent), f"lost {len(set(sent) - seen)} of {len(sent)} messages"
