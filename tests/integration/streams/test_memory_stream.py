"""The in-process broker: the conformance suite, plus groups, replay and injected failures."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest

from headrace.errors import ConfigError, SinkError, SourceError
from headrace.streams import (
    MemoryBroker,
    MemorySink,
    MemorySource,
    Message,
    OutRecord,
    Partition,
    broker,
    open_sink,
    open_source,
)
from support.stream_conformance import Backend, StreamConformance


class MemoryBackend:
    """A fresh registered broker per test, reached through ``memory://`` URLs."""

    def __init__(self) -> None:
        self.name = f"test-{uuid.uuid4().hex[:12]}"
        self.broker = broker(self.name)

    def new_topic(self, *, partitions: int = 1) -> str:
        topic = f"topic-{uuid.uuid4().hex[:8]}"
        self.broker.create_topic(topic, partitions=partitions)
        return topic

    def make_source(self, topic: str, *, group: str) -> MemorySource:
        return MemorySource(f"memory://{self.name}/{topic}?group={group}")

    def make_sink(self, topic: str) -> MemorySink:
        return MemorySink(f"memory://{self.name}/{topic}")

    def read_all(self, topic: str, *, expected: int, timeout: float) -> list[Message]:
        return self.broker.messages(topic)

    def produce(
        self, topic: str, values: Sequence[bytes], *, keys: Sequence[bytes] | None = None
    ) -> None:
        records = [
            OutRecord(value=v, key=None if keys is None else keys[i]) for i, v in enumerate(values)
        ]
        self.broker.append(topic, records)


class TestMemoryStream(StreamConformance):
    """Every promise of the contract, on the in-process broker."""

    @pytest.fixture
    def backend(self) -> Backend:
        return MemoryBackend()


@pytest.fixture
def mem() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def closing() -> Iterator[list[MemorySource | MemorySink]]:
    made: list[MemorySource | MemorySink] = []
    yield made
    for item in made:
        item.close()


def records(count: int, *, key: bytes | None = None) -> list[OutRecord]:
    return [OutRecord(value=f'{{"n": {i}}}'.encode(), key=key) for i in range(count)]


def test_join_moves_partitions_after_on_revoke(
    mem: MemoryBackend, closing: list[MemorySource | MemorySink]
) -> None:
    topic = mem.new_topic(partitions=4)
    revoked: list[list[Partition]] = []
    first = MemorySource(f"memory://{mem.name}/{topic}", group="g")
    closing.append(first)
    first.open(on_revoke=revoked.append)
    assert first.poll(max_messages=10, timeout=0) == []
    assert first.assignment == [(topic, p) for p in range(4)]

    second = MemorySource(f"memory://{mem.name}/{topic}", group="g")
    closing.append(second)
    second.open()
    # The partitions move only after their owner acknowledged the revocation in a poll.
    assert second.poll(max_messages=10, timeout=0) == []
    assert second.assignment == []
    first.poll(max_messages=10, timeout=0)
    assert revoked == [[(topic, 1), (topic, 3)]]
    assert first.assignment == [(topic, 0), (topic, 2)]
    second.poll(max_messages=10, timeout=0)
    assert second.assignment == [(topic, 1), (topic, 3)]


def test_close_redistributes_and_calls_on_revoke(
    mem: MemoryBackend, closing: list[MemorySource | MemorySink]
) -> None:
    topic = mem.new_topic(partitions=4)
    revoked: dict[str, list[list[Partition]]] = {"a": [], "b": [], "c": []}
    members = {}
    for name in ("a", "b", "c"):
        source = MemorySource(f"memory://{mem.name}/{topic}", group="g")
        closing.append(source)
        source.open(on_revoke=revoked[name].append)
        members[name] = source
    for source in members.values():
        source.poll(max_messages=1, timeout=0)
    assert [members[n].assignment for n in "abc"] == [
        [(topic, 0), (topic, 3)],
        [(topic, 1)],
        [(topic, 2)],
    ]
    mem.broker.append(topic, records(40))

    members["b"].close()
    # Round-robin over the two left: a keeps 0 and gives up 3, c gives up 2.
    members["a"].poll(max_messages=0, timeout=0)
    members["c"].poll(max_messages=0, timeout=0)
    assert revoked["a"] == [[(topic, 3)]]
    assert revoked["c"] == [[(topic, 2)]]
    assert revoked["b"] == []
    got: list[Message] = []
    deadline = time.monotonic() + 2
    while len(got) < 40 and time.monotonic() < deadline:
        for name in ("a", "c"):
            got.extend(members[name].poll(max_messages=100, timeout=0))
    assert sorted(m.value for m in got) == sorted(r.value for r in records(40))
    assert members["a"].assignment == [(topic, 0), (topic, 2)]
    assert members["c"].assignment == [(topic, 1), (topic, 3)]


def test_on_revoke_may_commit_what_is_done(
    mem: MemoryBackend, closing: list[MemorySource | MemorySink]
) -> None:
    topic = mem.new_topic(partitions=2)
    mem.broker.append(topic, records(6))  # round-robin: 3 per partition
    done: list[Message] = []

    first = MemorySource(f"memory://{mem.name}/{topic}", group="g")
    closing.append(first)
    first.open(on_revoke=lambda partitions: first.commit(done))
    done.extend(first.poll(max_messages=100, timeout=0))
    assert len(done) == 6

    second = MemorySource(f"memory://{mem.name}/{topic}", group="g")
    closing.append(second)
    second.open()
    first.poll(max_messages=10, timeout=0)  # gives partition 1 up, committing inside
    assert mem.broker.committed("g", topic) == {0: 3, 1: 3}
    # The new owner starts after that commit: nothing repeated, nothing lost.
    assert second.poll(max_messages=10, timeout=0) == []
    assert mem.broker.lag("g", topic) == 0


def test_commit_after_losing_the_partition_is_refused(
    mem: MemoryBackend, closing: list[MemorySource | MemorySink]
) -> None:
    topic = mem.new_topic(partitions=2)
    mem.broker.append(topic, records(4))
    first = MemorySource(f"memory://{mem.name}/{topic}", group="g")
    second = MemorySource(f"memory://{mem.name}/{topic}", group="g")
    closing.extend([first, second])
    first.open()
    batch = first.poll(max_messages=10, timeout=0)
    second.open()
    first.poll(max_messages=10, timeout=0)  # partition 1 revoked (no callback)
    with pytest.raises(SourceError, match=rf"{topic}\[1\]@1 .*reassigned in a rebalance"):
        first.commit(batch)


def test_poll_wakes_up_when_a_message_arrives(
    mem: MemoryBackend, closing: list[MemorySource | MemorySink]
) -> None:
    topic = mem.new_topic()
    source = MemorySource(f"memory://{mem.name}/{topic}", group="g")
    closing.append(source)
    source.open()
    timer = threading.Timer(0.1, mem.broker.append, args=(topic, records(1)))
    timer.start()
    started = time.monotonic()
    try:
        got = source.poll(max_messages=10, timeout=5)
    finally:
        timer.join()
    assert [m.value for m in got] == [b'{"n": 0}']
    assert time.monotonic() - started < 2


def test_paused_source_fetches_nothing_until_resumed(
    mem: MemoryBackend, closing: list[MemorySource | MemorySink]
) -> None:
    topic = mem.new_topic()
    mem.broker.append(topic, records(3))
    source = MemorySource(f"memory://{mem.name}/{topic}", group="g")
    closing.append(source)
    source.open()
    source.pause()
    assert source.poll(max_messages=10, timeout=0.05) == []
    source.resume()
    assert len(source.poll(max_messages=10, timeout=0.05)) == 3


def test_fail_next_flush_drops_the_batch_once(
    mem: MemoryBackend, closing: list[MemorySource | MemorySink]
) -> None:
    topic = mem.new_topic()
    sink = MemorySink(f"memory://{mem.name}/{topic}")
    closing.append(sink)
    sink.open()
    sink.fail_next_flush()
    sink.send(records(3))
    assert sink.pending == 3
    with pytest.raises(SinkError, match=rf"3 records to memory://{mem.name}/{topic} were not"):
        sink.flush(timeout=1)
    assert sink.pending == 0
    assert mem.broker.messages(topic) == []
    sink.send(records(2))
    sink.flush(timeout=1)
    assert len(mem.broker.messages(topic)) == 2


def test_broker_level_failure_reaches_sinks_built_from_urls(mem: MemoryBackend) -> None:
    # A pipeline builds its sinks from URLs; the test only holds the broker.
    topic = mem.new_topic()
    mem.broker.fail_next_flush(topic, times=2)
    sink = open_sink(f"memory://{mem.name}", topic=topic)
    sink.open()
    for _ in range(2):
        sink.send(records(1))
        with pytest.raises(SinkError, match="injected failure"):
            sink.flush(timeout=1)
    sink.send(records(1))
    sink.flush(timeout=1)
    sink.close()
    assert len(mem.broker.messages(topic)) == 1


def test_close_flushes_pending_records(mem: MemoryBackend) -> None:
    topic = mem.new_topic()
    sink = MemorySink(f"memory://{mem.name}/{topic}")
    sink.open()
    sink.send(records(2))
    sink.close()
    assert len(mem.broker.messages(topic)) == 2


def test_keys_choose_partitions_stably(mem: MemoryBackend) -> None:
    topic = mem.new_topic(partitions=3)
    stored = mem.broker.append(topic, records(10, key=b"user-7"))
    assert len({m.partition for m in stored}) == 1
    assert [m.offset for m in stored] == list(range(10))
    again = mem.broker.append(topic, records(1, key=b"user-7"))
    assert again[0].partition == stored[0].partition


def test_replay_from_offset_and_from_time(
    mem: MemoryBackend, closing: list[MemorySource | MemorySink]
) -> None:
    topic = mem.new_topic()
    mem.broker.append(topic, records(3))
    time.sleep(0.005)  # timestamps are in milliseconds: keep the three apart from `middle`
    middle = dt.datetime.now(dt.UTC)
    time.sleep(0.005)
    mem.broker.append(topic, records(2))
    mem.broker.set_committed("g", topic, {0: 5})

    from_offset = open_source(f"memory://{mem.name}", topic=topic, group="g", options={"start": 1})
    assert isinstance(from_offset, MemorySource)
    closing.append(from_offset)
    from_offset.open()
    assert [m.offset for m in from_offset.poll(max_messages=10, timeout=0)] == [1, 2, 3, 4]
    from_offset.close()

    from_time = MemorySource(
        f"memory://{mem.name}/{topic}", group="g", options={"start": middle.isoformat()}
    )
    closing.append(from_time)
    from_time.open()
    batch = from_time.poll(max_messages=10, timeout=0)
    assert [m.offset for m in batch] == [3, 4]
    from_time.commit(batch[:1])
    assert mem.broker.committed("g", topic) == {0: 4}  # a replay's commits may go back


def test_url_and_keyword_errors_say_how_to_fix() -> None:
    with pytest.raises(ConfigError, match=r"no consumer group: add \?group=NAME"):
        MemorySource("memory://x/topic")
    with pytest.raises(ConfigError, match="names no topic"):
        MemorySink("memory://x")
    with pytest.raises(ConfigError, match="names topic 'a' but topic='b'"):
        MemorySink("memory://x/a", topic="b")
    with pytest.raises(ConfigError, match="unknown options \\['acks'\\]"):
        MemorySink("memory://x/a", options={"acks": "all"})
    with pytest.raises(ConfigError, match="start='yesterday' is neither an offset"):
        MemorySource("memory://x/a", group="g", options={"start": "yesterday"})


def test_topic_with_other_partition_count_is_refused() -> None:
    private = MemoryBroker("private")
    private.create_topic("t", partitions=1)
    with pytest.raises(ConfigError, match="already has 1 partitions, not 2"):
        private.create_topic("t", partitions=2)


def test_unopened_or_closed_source_says_so(mem: MemoryBackend) -> None:
    topic = mem.new_topic()
    source = MemorySource(f"memory://{mem.name}/{topic}", group="g")
    with pytest.raises(SourceError, match="is not open: call open"):
        source.poll(max_messages=1, timeout=0)
    source.open()
    source.close()
    with pytest.raises(SourceError, match="was closed"):
        source.poll(max_messages=1, timeout=0)


def test_registry_returns_one_broker_per_name() -> None:
    name = f"registry-{uuid.uuid4().hex[:8]}"
    assert broker(name) is broker(name)
    assert broker(name) is not broker(name + "-other")
    private = MemoryBroker(name)
    sink = MemorySink(topic="t", broker=private)
    assert sink.url == f"memory://{name}/t"
    assert sink.broker is private
