"""NATS JetStream source and sink: the conformance suite plus what only JetStream has.

Runs against the shared NATS at 127.0.0.1:4222 (every test uses fresh subjects and
deletes its streams afterwards); the outage test starts its own ``nats-server -js`` on a
free port and stops it by process id.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from conftest import (
    LOCALHOST,
    service_unavailable,
    start_process,
    stop_process,
    wait_for_port,
)
from headrace._redact import redact_url
from headrace.errors import ConfigError, SinkError, SourceError, StreamUnavailableError
from headrace.streams.base import Message, OutRecord
from headrace.streams.nats import KEY_HEADER, NatsSink, NatsSource
from support.stream_conformance import Backend, StreamConformance

pytestmark = pytest.mark.nats


class NatsBackend:
    """The conformance suite's view of NATS, with its own client (not the module's)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.streams: list[str] = []

    def new_topic(self, *, partitions: int = 1) -> str:
        token = uuid.uuid4().hex[:12]
        subject, stream = f"headrace-test.{token}", f"HRTEST_{token}"

        async def create(js: Any) -> None:
            await js.add_stream(
                StreamConfig(name=stream, subjects=[subject], storage=StorageType.MEMORY)
            )

        self.run(create)
        self.streams.append(stream)
        return subject

    def make_source(self, topic: str, *, group: str) -> NatsSource:
        return NatsSource(self.url, topic=topic, group=group)

    def make_sink(self, topic: str) -> NatsSink:
        return NatsSink(self.url, topic=topic)

    def read_all(self, topic: str, *, expected: int, timeout: float) -> list[Message]:
        async def read(js: Any) -> list[Message]:
            sub = await js.pull_subscribe(topic, durable=None)
            got: list[Message] = []
            deadline = time.monotonic() + timeout
            while len(got) < expected and time.monotonic() < deadline:
                try:
                    batch = await sub.fetch(100, timeout=0.5)
                except nats.errors.TimeoutError:
                    continue
                got += [_message(m) for m in batch]
            await sub.unsubscribe()
            return got

        result: list[Message] = self.run(read)
        return result

    def produce(
        self, topic: str, values: Sequence[bytes], *, keys: Sequence[bytes] | None = None
    ) -> None:
        async def produce(js: Any) -> None:
            for i, value in enumerate(values):
                headers = None if keys is None else {KEY_HEADER: keys[i].decode()}
                await js.publish(topic, value, headers=headers)

        self.run(produce)

    def run(self, work: Any) -> Any:
        async def main() -> Any:
            client = await nats.connect(self.url, connect_timeout=2, max_reconnect_attempts=1)
            try:
                return await work(client.jetstream())
            finally:
                await client.close()

        return asyncio.run(main())

    def cleanup(self) -> None:
        async def delete(js: Any) -> None:
            for stream in self.streams:
                try:
                    await js.delete_stream(stream)
                except NotFoundError:
                    pass

        self.run(delete)


def _message(msg: Any) -> Message:
    """The documented wire format, decoded independently of the module under test."""
    headers = dict(msg.headers or {})
    key = headers.pop(KEY_HEADER, None)

    def value(text: str) -> bytes:
        return base64.b64decode(text[4:]) if text.startswith("b64:") else text.encode()

    return Message(
        value=msg.data,
        topic=msg.subject,
        offset=msg.metadata.sequence.stream,
        key=None if key is None else value(key),
        headers=[(k, value(v)) for k, v in headers.items()],
    )


@pytest.fixture
def backend(nats_url: str) -> Iterator[NatsBackend]:
    made = NatsBackend(nats_url)
    yield made
    made.cleanup()


class TestNatsStreamConformance(StreamConformance):
    unsupported = {"partitions": "a JetStream consumer delivers one ordered stream"}

    @pytest.fixture
    def backend(self, nats_url: str) -> Iterator[Backend]:
        made = NatsBackend(nats_url)
        yield made
        made.cleanup()


# --- helpers ---------------------------------------------------------------------------


def poll_until(source: NatsSource, *, expected: int, timeout: float = 5.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got += source.poll(max_messages=100, timeout=0.2)
    return got


def values(count: int, tag: str = "v") -> list[bytes]:
    return [f'{{"{tag}": {i}}}'.encode() for i in range(count)]


def ack_pending(backend: NatsBackend, stream_subject: str, group: str) -> int:
    async def info(js: Any) -> int:
        stream = await js.find_stream_name_by_subject(stream_subject)
        consumer = await js.consumer_info(stream, group)
        return int(consumer.num_ack_pending)

    result: int = backend.run(info)
    return result


# --- delivery --------------------------------------------------------------------------


def test_unacknowledged_messages_come_again_after_ack_wait(backend: NatsBackend) -> None:
    topic, group = backend.new_topic(), "ackwait"
    backend.produce(topic, values(3))
    options = {"ack_wait": 1}
    hung = NatsSource(backend.url, topic=topic, group=group, options=options)
    other = NatsSource(backend.url, topic=topic, group=group, options=options)
    hung.open()
    other.open()
    try:
        before_delivery = time.monotonic()
        got = poll_until(hung, expected=3)
        hung.commit(got[:1])
        # `hung` stops polling (stuck or dead): after ack_wait, and not before, ...
        again = poll_until(other, expected=2, timeout=5)
        assert time.monotonic() - before_delivery >= 1.0
        # ... exactly the two unacknowledged ones come again, with their sequences.
        assert [(m.offset, m.value) for m in again] == [(m.offset, m.value) for m in got[1:]]
        other.commit(again)
        assert ack_pending(backend, topic, group) == 0
    finally:
        hung.close()
        other.close()


def test_durable_consumer_resumes_after_close_and_reopen(backend: NatsBackend) -> None:
    topic, group = backend.new_topic(), "durable"
    backend.produce(topic, values(5))
    first = NatsSource(backend.url, topic=topic, group=group)
    first.open()
    got = poll_until(first, expected=5)
    first.commit(got[2:3])  # "and everything delivered before": 1, 2 and 3
    first.close()  # gives 4 and 5 back at once
    backend.produce(topic, values(2, tag="new"))
    second = NatsSource(backend.url, topic=topic, group=group)
    second.open()
    try:
        resumed = poll_until(second, expected=4)
        assert [m.value for m in resumed] == values(5)[3:] + values(2, tag="new")
        assert [m.offset for m in resumed] == [4, 5, 6, 7]
        second.commit(resumed)
        assert second.poll(max_messages=10, timeout=0.2) == []
        assert ack_pending(backend, topic, group) == 0
        second.commit(resumed)  # twice: harmless
        with pytest.raises(SourceError, match="not read by this source"):
            second.commit([Message(value=b"", topic="elsewhere", offset=1)])
    finally:
        second.close()


def test_paused_source_keeps_its_messages_past_ack_wait(backend: NatsBackend) -> None:
    topic, group = backend.new_topic(), "paused"
    backend.produce(topic, values(2))
    options = {"ack_wait": 1}
    slow = NatsSource(backend.url, topic=topic, group=group, options=options)
    other = NatsSource(backend.url, topic=topic, group=group, options=options)
    slow.open()
    other.open()
    try:
        held = poll_until(slow, expected=2)
        slow.pause()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert slow.poll(max_messages=10, timeout=0.1) == []
            assert other.poll(max_messages=10, timeout=0.1) == []
        slow.resume()
        slow.commit(held)
        assert ack_pending(backend, topic, group) == 0
    finally:
        slow.close()
        other.close()


def test_replay_and_initial_position(backend: NatsBackend) -> None:
    topic = backend.new_topic()
    backend.produce(topic, values(4))
    latest = NatsSource(
        backend.url, topic=topic, group="late", options={"initial_position": "latest"}
    )
    latest.open()
    try:
        assert latest.poll(max_messages=10, timeout=0.2) == []
        backend.produce(topic, values(1, tag="new"))
        new = poll_until(latest, expected=1)
        assert [m.value for m in new] == values(1, tag="new")
        latest.commit(new)
    finally:
        latest.close()
    replay = NatsSource(backend.url, topic=topic, group="late", options={"start": 3})
    replay.open()
    try:
        got = poll_until(replay, expected=3)
        assert [m.offset for m in got] == [3, 4, 5]
    finally:
        replay.close()
    since = datetime.now(UTC)
    by_time = NatsSource(backend.url, topic=topic, group="late", options={"start": since})
    by_time.open()
    try:
        assert by_time.poll(max_messages=10, timeout=0.2) == []
    finally:
        by_time.close()


def test_deleted_consumer_and_stream_are_recreated(
    backend: NatsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headrace.streams.nats.source as module

    monkeypatch.setattr(module, "_CONSUMER_CHECK_S", 0.1)
    topic = f"headrace-test.recreated.{uuid.uuid4().hex[:8]}"
    backend.streams.append(topic.replace(".", "_"))
    sink = NatsSink(backend.url, topic=topic, options={"stream_config": {"storage": "memory"}})
    source = NatsSource(backend.url, topic=topic, group="g")
    sink.open()
    source.open()
    try:
        sink.send([OutRecord(value=b"1")])
        sink.flush(timeout=5)
        source.commit(poll_until(source, expected=1))

        async def delete_consumer(js: Any) -> None:
            await js.delete_consumer(topic.replace(".", "_"), "g")

        backend.run(delete_consumer)
        sink.send([OutRecord(value=b"2")])
        sink.flush(timeout=5)
        # The new consumer starts at the beginning again: at-least-once.
        assert [m.value for m in poll_until(source, expected=2)] == [b"1", b"2"]

        async def delete_stream(js: Any) -> None:
            await js.delete_stream(topic.replace(".", "_"))

        backend.run(delete_stream)
        sink.send([OutRecord(value=b"lost")])
        with pytest.raises(SinkError, match="was the stream deleted"):
            sink.flush(timeout=5)
        sink.send([OutRecord(value=b"3")])  # creates the stream again first
        sink.flush(timeout=5)
        assert [m.value for m in poll_until(source, expected=1)] == [b"3"]
    finally:
        source.close()
        sink.close()


# --- wire format -----------------------------------------------------------------------


def test_headers_that_nats_cannot_carry_as_is_round_trip(
    backend: NatsBackend, caplog: pytest.LogCaptureFixture
) -> None:
    topic = backend.new_topic()
    awkward = [
        ("with space", b"x"),
        ("100%", b"y"),
        ("padded", b"  both ends  "),
        ("lines", b"one\r\ntwo"),
        ("looks-escaped", b"b64:abc"),
        ("unicode", "h\u00e9llo".encode()),
        ("empty", b""),
    ]
    sink = NatsSink(backend.url, topic=topic)
    sink.open()
    with caplog.at_level(logging.WARNING, logger="headrace.streams.nats"):
        sink.send(
            [
                OutRecord(value=b"1", key=b" spaced key ", headers=awkward),
                OutRecord(value=b"2", headers=[("twice", b"a"), ("twice", b"b")]),
            ]
        )
    sink.flush(timeout=5)
    sink.close()
    assert "appears more than once" in caplog.text
    source = NatsSource(backend.url, topic=topic, group="g")
    source.open()
    try:
        first, second = poll_until(source, expected=2)
        assert first.key == b" spaced key "
        assert first.headers == awkward
        assert second.key is None and second.headers == [("twice", b"b")]
        assert first.timestamp_ms is not None
        assert abs(first.timestamp_ms - time.time() * 1000) < 60_000
    finally:
        source.close()


def test_sink_creates_a_stream_named_after_the_subject(backend: NatsBackend) -> None:
    topic = f"headrace-test.created.{uuid.uuid4().hex[:8]}"
    stream = topic.replace(".", "_")
    backend.streams.append(stream)
    with pytest.raises(ConfigError, match="create_stream"):
        NatsSink(backend.url, topic=topic, options={"create_stream": False}).open()
    sink = NatsSink(backend.url, topic=topic, options={"stream_config": {"storage": "memory"}})
    sink.open()
    sink.send([OutRecord(value=b"x")])
    sink.flush(timeout=5)
    sink.close()

    async def info(js: Any) -> Any:
        return await js.stream_info(stream)

    assert backend.run(info).state.messages == 1


def test_dedupe_by_key_drops_repeats_within_the_window(backend: NatsBackend) -> None:
    topic = backend.new_topic()
    sink = NatsSink(backend.url, topic=topic, options={"dedupe_by_key": True})
    sink.open()
    record = OutRecord(value=b"out", key=b"event-1:sha256-abc")
    sink.send([record, record])
    sink.flush(timeout=5)
    sink.send([record])
    sink.flush(timeout=5)
    sink.close()
    assert len(backend.read_all(topic, expected=2, timeout=1.0)) == 1


def test_bad_options_are_config_errors(nats_url: str) -> None:
    with pytest.raises(ConfigError, match="durable consumer"):
        NatsSource(nats_url, topic="a.b", group="has.dot")
    with pytest.raises(ConfigError, match="initial_position"):
        NatsSource(nats_url, topic="a", group="g", options={"initial_position": "x"})
    with pytest.raises(ConfigError, match="time zone"):
        NatsSource(nats_url, topic="a", group="g", options={"start": datetime(2026, 1, 1)})
    with pytest.raises(ConfigError, match="no_such_option"):
        NatsSink(nats_url, topic="a", options={"no_such_option": 1})
    with pytest.raises(ConfigError, match="wildcard"):
        NatsSink(nats_url, topic="a.*")


def test_stream_of_another_subject_is_refused(backend: NatsBackend) -> None:
    backend.new_topic()
    stream = backend.streams[-1]
    with pytest.raises(ConfigError, match="not subject"):
        NatsSource(
            backend.url, topic="headrace-test.other", group="g", options={"stream": stream}
        ).open()


# --- outages ---------------------------------------------------------------------------


class OwnNats:
    """A nats-server with JetStream of this test's own; its store survives restarts."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://app:s3cret@{LOCALHOST}:{self.port}"

    def start(self) -> None:
        log = self.directory / "nats.log"
        self.proc = start_process(
            ["nats-server", "-a", LOCALHOST, "-p", str(self.port), "-js",
             "-sd", str(self.directory / "store"), "--user", "app", "--pass", "s3cret"],
            log=log,
        )  # fmt: skip
        wait_for_port(self.proc, self.port, name="nats-server", log=log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture
def own_nats(tmp_path: Path, free_tcp_port: int) -> Iterator[OwnNats]:
    if shutil.which("nats-server") is None:
        service_unavailable("nats-server", "PATH", "apt-get install nats-server")
    server = OwnNats(free_tcp_port, tmp_path)
    server.start()
    yield server
    server.stop()


def test_outage_raises_unavailable_then_recovers(own_nats: OwnNats) -> None:
    topic, group = "outage.events", "workers"
    fast = {"reconnect_time_wait": 0.2, "connect_timeout": 1, "ack_wait": 30}
    # The source gives reconnecting up quickly (and rebuilds its connection later);
    # the sink keeps reconnecting in the background.
    source = NatsSource(
        own_nats.url, topic=topic, group=group, options={**fast, "max_reconnect_attempts": 2}
    )
    sink = NatsSink(
        own_nats.url,
        topic=topic,
        options={"reconnect_time_wait": 0.2, "max_reconnect_attempts": -1, "ack_timeout": 1},
    )
    sink.open()
    source.open()
    try:
        sink.send([OutRecord(value=v) for v in values(3)])
        sink.flush(timeout=5)
        held = poll_until(source, expected=3)
        source.commit(held[:1])

        own_nats.stop()
        started = time.monotonic()
        with pytest.raises(StreamUnavailableError) as caught:
            source.poll(max_messages=10, timeout=0.5)
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert f"127.0.0.1:{own_nats.port}" in message and "s3cret" not in message
        assert "outage.events" in message
        with pytest.raises(StreamUnavailableError):
            source.commit(held[1:])
        sink.send([OutRecord(value=b"during")])
        with pytest.raises(SinkError):
            sink.flush(timeout=3)
        time.sleep(1.0)  # the source's client gives up reconnecting
        with pytest.raises(StreamUnavailableError):
            source.poll(max_messages=10, timeout=0.2)

        own_nats.start()
        sink.send([OutRecord(value=b"after")])
        deadline = time.monotonic() + 10
        while True:  # the sink reconnects in the background
            try:
                sink.flush(timeout=3)
                break
            except SinkError:
                if time.monotonic() > deadline:
                    raise
                sink.send([OutRecord(value=b"after")])
        after = poll_until(source, expected=1)
        assert b"after" in [m.value for m in after]
        # The messages held across the outage can still be committed.
        source.commit(held[1:] + after)
    finally:
        source.close()
        sink.close()


def test_unreachable_server_fails_open_quickly(free_tcp_port: int) -> None:
    url = f"nats://user:hunter2@{LOCALHOST}:{free_tcp_port}"
    started = time.monotonic()
    with pytest.raises(StreamUnavailableError, match="unreachable") as caught:
        NatsSource(url, topic="t", group="g", options={"connect_timeout": 1}).open()
    with pytest.raises(StreamUnavailableError):
        NatsSink(url, topic="t", options={"connect_timeout": 1}).open()
    assert time.monotonic() - started < 8
    assert "hunter2" not in str(caught.value)
    assert redact_url(url) == f"nats://user:***@{LOCALHOST}:{free_tcp_port}"
