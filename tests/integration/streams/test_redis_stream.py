"""Redis Streams source and sink: the conformance suite plus what only Redis has.

Runs against the shared Redis at 127.0.0.1:6379 (every test uses fresh stream keys and
deletes them afterwards); the outage test starts its own ``redis-server`` on a free port
and stops it by process id.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import redis

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
from headrace.streams.redis import RedisStreamSink, RedisStreamSource
from support.stream_conformance import Backend, StreamConformance

pytestmark = pytest.mark.redis


class RedisBackend:
    """The conformance suite's view of Redis; reads and writes raw entries itself."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.keys: list[str] = []

    def new_topic(self, *, partitions: int = 1) -> str:
        key = f"headrace-test:{uuid.uuid4().hex[:12]}"
        self.keys.append(key)
        return key

    def make_source(self, topic: str, *, group: str) -> RedisStreamSource:
        return RedisStreamSource(self.url, topic=topic, group=group)

    def make_sink(self, topic: str) -> RedisStreamSink:
        return RedisStreamSink(self.url, topic=topic)

    def read_all(self, topic: str, *, expected: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            entries = xrange(self.client, topic)
            if len(entries) >= expected or time.monotonic() > deadline:
                return [_message(topic, entry_id, fields) for entry_id, fields in entries]
            time.sleep(0.05)

    def produce(
        self, topic: str, values: Sequence[bytes], *, keys: Sequence[bytes] | None = None
    ) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i, value in enumerate(values):
            fields: dict[str, bytes] = {"value": value}
            if keys is not None:
                fields["key"] = keys[i]
            pipe.xadd(topic, fields)  # type: ignore[arg-type]
        pipe.execute()

    def cleanup(self) -> None:
        if self.keys:
            self.client.delete(*self.keys)
        self.client.close()
        self.client.connection_pool.disconnect()  # redis-py 5.0's close() does not


def xrange(client: redis.Redis, topic: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of `topic`, as redis-py parses them (bytes, one value per field)."""
    return cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(topic))


def _message(topic: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Message:
    """The documented wire format, decoded independently of the module under test."""
    headers = [(k[2:].decode(), v) for k, v in fields.items() if k.startswith(b"h:")]
    return Message(
        value=fields[b"value"],
        topic=topic,
        offset=entry_id.decode(),
        key=fields.get(b"key"),
        headers=headers,
    )


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    made = RedisBackend(redis_url)
    yield made
    made.cleanup()


class TestRedisStreamConformance(StreamConformance):
    unsupported = {"partitions": "a Redis stream is one partition (shard over several keys)"}

    @pytest.fixture
    def backend(self, redis_url: str) -> Iterator[Backend]:
        made = RedisBackend(redis_url)
        yield made
        made.cleanup()


# --- helpers ---------------------------------------------------------------------------

# Reads `count` entries as `consumer`, commits the first `commit` of them, prints their
# ids and then waits to be killed: a worker that crashes before committing the rest.
CRASHING_READER = """
import json, sys, time
from headrace.streams.redis import RedisStreamSource
url, topic, group, consumer, count, commit = sys.argv[1:7]
source = RedisStreamSource(url, topic=topic, group=group,
                           options={"consumer": consumer, "claim_idle_ms": 60000})
source.open()
got = []
deadline = time.monotonic() + 20
while len(got) < int(count) and time.monotonic() < deadline:
    got += source.poll(max_messages=int(count) - len(got), timeout=0.2)
source.commit(got[: int(commit)])
print(json.dumps([m.offset for m in got]), flush=True)
time.sleep(60)
"""


def crash_reader(
    url: str, topic: str, *, group: str, consumer: str, count: int, commit: int
) -> list[str]:
    """Run a reader in a child process, then kill -9 it; returns the ids it read."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_READER, url, topic, group, consumer, str(count),
         str(commit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"crashing reader died early:\n{stderr}")
        ids: list[str] = json.loads(line)
        return ids
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def poll_until(source: RedisStreamSource, *, expected: int, timeout: float = 5.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got += source.poll(max_messages=100, timeout=0.1)
    return got


def values(count: int, tag: str = "v") -> list[bytes]:
    return [f'{{"{tag}": {i}}}'.encode() for i in range(count)]


def pending(client: redis.Redis, topic: str, group: str) -> int:
    info: dict[str, Any] = client.xpending(topic, group)
    return int(info["pending"])


# --- consumer groups: crashes, restarts, claims ----------------------------------------


def test_crashed_members_entries_are_claimed_after_claim_idle_ms(
    backend: RedisBackend,
) -> None:
    topic, group = backend.new_topic(), "claims"
    backend.produce(topic, values(5))
    before_delivery = time.monotonic()
    crashed = crash_reader(backend.url, topic, group=group, consumer="dead", count=5, commit=0)
    assert len(crashed) == 5

    patient = RedisStreamSource(
        backend.url, topic=topic, group=group, options={"claim_idle_ms": 60_000}
    )
    patient.open()
    try:  # a member that might only be slow keeps its entries for claim_idle_ms
        assert patient.poll(max_messages=10, timeout=0.2) == []
    finally:
        patient.close()
    survivor = RedisStreamSource(
        backend.url,
        topic=topic,
        group=group,
        options={"consumer": "alive", "claim_idle_ms": 600, "claim_interval_ms": 100},
    )
    survivor.open()
    try:
        got = poll_until(survivor, expected=5)
        assert time.monotonic() - before_delivery >= 0.6
        assert [m.offset for m in got] == crashed
        assert [m.value for m in got] == values(5)
        survivor.commit(got)
        assert pending(backend.client, topic, group) == 0
        assert survivor.poll(max_messages=10, timeout=0.1) == []
    finally:
        survivor.close()


def test_restart_with_the_same_name_rereads_its_own_pending_entries(
    backend: RedisBackend,
) -> None:
    topic, group = backend.new_topic(), "restart"
    backend.produce(topic, values(6))
    read = crash_reader(backend.url, topic, group=group, consumer="worker-1", count=6, commit=2)
    backend.produce(topic, values(2, tag="new"))

    restarted = RedisStreamSource(
        backend.url, topic=topic, group=group, options={"consumer": "worker-1"}
    )
    restarted.open()
    try:
        first = restarted.poll(max_messages=100, timeout=1.0)
        # At once (no claim delay), the uncommitted ones first, in order.
        assert [m.offset for m in first] == read[2:]
        rest = poll_until(restarted, expected=2)
        assert [m.value for m in rest] == values(2, tag="new")
        restarted.commit(first + rest)
        assert pending(backend.client, topic, group) == 0
    finally:
        restarted.close()


def test_close_hands_uncommitted_entries_to_the_next_member(backend: RedisBackend) -> None:
    topic, group = backend.new_topic(), "handover"
    backend.produce(topic, values(4))
    first = RedisStreamSource(backend.url, topic=topic, group=group)
    first.open()
    got = poll_until(first, expected=4)
    first.commit(got[:1])
    first.close()
    # A different member, default claim_idle_ms (30 s): the hand-back makes it immediate.
    second = RedisStreamSource(backend.url, topic=topic, group=group)
    second.open()
    try:
        again = poll_until(second, expected=3, timeout=2.0)
        assert [m.offset for m in again] == [m.offset for m in got[1:]]
    finally:
        second.close()


def test_inflight_entries_of_a_live_member_are_not_claimed(backend: RedisBackend) -> None:
    topic, group = backend.new_topic(), "slow"
    backend.produce(topic, values(3))
    options = {"claim_idle_ms": 600, "claim_interval_ms": 50}
    slow = RedisStreamSource(backend.url, topic=topic, group=group, options=options)
    other = RedisStreamSource(backend.url, topic=topic, group=group, options=options)
    slow.open()
    other.open()
    try:
        held = poll_until(slow, expected=3)
        slow.pause()  # backpressure: the slow member keeps polling, paused
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert slow.poll(max_messages=10, timeout=0.05) == []
            assert other.poll(max_messages=10, timeout=0.05) == []
        slow.resume()
        slow.commit(held)
        assert pending(backend.client, topic, group) == 0
    finally:
        slow.close()
        other.close()


def test_commit_acknowledges_everything_delivered_before(backend: RedisBackend) -> None:
    topic, group = backend.new_topic(), "cumulative"
    backend.produce(topic, values(5))
    source = RedisStreamSource(backend.url, topic=topic, group=group)
    source.open()
    try:
        got = poll_until(source, expected=5)
        source.commit(got[3:4])  # the contract: "and everything before them"
        assert pending(backend.client, topic, group) == 1
        source.commit(got[4:])
        assert pending(backend.client, topic, group) == 0
        source.commit(got[4:])  # twice: harmless
        with pytest.raises(SourceError, match="not read from this stream"):
            source.commit([Message(value=b"", topic="elsewhere", offset="1-0")])
    finally:
        source.close()


def test_idle_members_without_pending_entries_are_removed(backend: RedisBackend) -> None:
    topic, group = backend.new_topic(), "reap"
    backend.produce(topic, values(1))
    backend.client.xgroup_create(topic, group, id="0")
    backend.client.xgroup_createconsumer(topic, group, "ghost")
    time.sleep(0.3)
    source = RedisStreamSource(backend.url, topic=topic, group=group, options={"reap_idle_ms": 200})
    source.open()
    try:
        assert len(poll_until(source, expected=1)) == 1
        names = {c["name"] for c in backend.client.xinfo_consumers(topic, group)}
        assert b"ghost" not in names
        assert source.consumer.encode() in names
    finally:
        source.close()


# --- positions and the entry layout ----------------------------------------------------


def test_initial_position_latest_and_replay_from_an_id(backend: RedisBackend) -> None:
    topic = backend.new_topic()
    backend.produce(topic, values(3, tag="old"))
    ids = [i.decode() for i, _ in xrange(backend.client, topic)]
    latest = RedisStreamSource(
        backend.url, topic=topic, group="late", options={"initial_position": "latest"}
    )
    latest.open()
    try:
        assert latest.poll(max_messages=10, timeout=0.1) == []
        backend.produce(topic, values(1, tag="new"))
        new = poll_until(latest, expected=1)
        assert [m.value for m in new] == values(1, tag="new")
        latest.commit(new)
    finally:
        latest.close()
    # Replay moves an existing group, inclusive of the entry named.
    replay = RedisStreamSource(backend.url, topic=topic, group="late", options={"start": ids[1]})
    replay.open()
    try:
        got = poll_until(replay, expected=3)
        assert [m.offset for m in got[:2]] == ids[1:]
        assert got[0].timestamp_ms == int(ids[1].split("-")[0])
    finally:
        replay.close()


def test_foreign_entries_and_repeated_headers(backend: RedisBackend) -> None:
    topic = backend.new_topic()
    # Another producer's layout: no value field, plain field names.
    backend.client.xadd(topic, {"event_id": "e1", "amount": "3.5"})
    sink = RedisStreamSink(backend.url, topic=topic)
    sink.open()
    headers = [("tag", b"a"), ("tag", b"b"), ("h:x", b"\x00")]
    sink.send([OutRecord(value=b"", key=b"", headers=headers)])
    sink.flush(timeout=5)
    sink.close()
    source = RedisStreamSource(backend.url, topic=topic, group="g")
    source.open()
    try:
        foreign, ours = poll_until(source, expected=2)
        assert foreign.value == b"" and foreign.key is None
        assert foreign.headers == [("event_id", b"e1"), ("amount", b"3.5")]
        assert ours.key == b"" and ours.headers == headers
    finally:
        source.close()


def test_maxlen_trims_and_trimmed_pending_entries_are_dropped(backend: RedisBackend) -> None:
    topic, group = backend.new_topic(), "trim"
    sink = RedisStreamSink(backend.url, topic=topic, options={"maxlen": 5, "approximate": False})
    sink.open()
    sink.send([OutRecord(value=v) for v in values(8)])
    sink.flush(timeout=5)
    assert backend.client.xlen(topic) == 5
    reader = RedisStreamSource(backend.url, topic=topic, group=group, options={"consumer": "c"})
    reader.open()
    got = poll_until(reader, expected=5)
    reader.close()
    # Trim everything while the entries are still pending: a restart finds nothing.
    sink.send([OutRecord(value=b"last")])
    sink.flush(timeout=5)
    sink.close()
    backend.client.xtrim(topic, maxlen=1, approximate=False)
    restarted = RedisStreamSource(backend.url, topic=topic, group=group, options={"consumer": "c"})
    restarted.open()
    try:
        rest = poll_until(restarted, expected=1)
        assert [m.value for m in rest] == [b"last"]
        assert len(got) == 5
        restarted.commit(rest)
        assert pending(backend.client, topic, group) == 0
    finally:
        restarted.close()


def test_bad_options_are_config_errors(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="initial_position"):
        RedisStreamSource(redis_url, topic="t", group="g", options={"initial_position": "x"})
    with pytest.raises(ConfigError, match="claim_idle_ms"):
        RedisStreamSource(redis_url, topic="t", group="g", options={"claim_idle_ms": -1})
    with pytest.raises(ConfigError, match="start"):
        RedisStreamSource(redis_url, topic="t", group="g", options={"start": "yesterday"})
    with pytest.raises(ConfigError, match="no_such_option"):
        RedisStreamSink(redis_url, topic="t", options={"no_such_option": 1})


def test_group_destroyed_under_a_running_source_is_recreated(backend: RedisBackend) -> None:
    topic, group = backend.new_topic(), "destroyed"
    backend.produce(topic, values(2))
    source = RedisStreamSource(backend.url, topic=topic, group=group)
    source.open()
    try:
        source.commit(poll_until(source, expected=2))
        backend.client.xgroup_destroy(topic, group)
        # Recreated at the beginning: at-least-once, so the backlog comes again.
        assert len(poll_until(source, expected=2)) == 2
    finally:
        source.close()


# --- outages ---------------------------------------------------------------------------


class OwnRedis:
    """A redis-server of this test's own, with an append-only file so restarts keep data."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:s3cret@{LOCALHOST}:{self.port}/0"

    def start(self) -> None:
        log = self.directory / "redis.log"
        self.proc = start_process(
            ["redis-server", "--port", str(self.port), "--bind", LOCALHOST,
             "--requirepass", "s3cret", "--save", "", "--appendonly", "yes",
             "--dir", str(self.directory)],
            log=log,
        )  # fmt: skip
        wait_for_port(self.proc, self.port, name="redis-server", log=log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path, free_tcp_port: int) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        service_unavailable("redis-server", "PATH", "apt-get install redis-server")
    server = OwnRedis(free_tcp_port, tmp_path)
    server.start()
    yield server
    server.stop()


def test_outage_raises_unavailable_then_recovers(own_redis: OwnRedis) -> None:
    topic, group = "outage", "g"
    sink = RedisStreamSink(own_redis.url, topic=topic)
    source = RedisStreamSource(own_redis.url, topic=topic, group=group)
    sink.open()
    source.open()
    try:
        sink.send([OutRecord(value=v) for v in values(3)])
        sink.flush(timeout=5)
        before = poll_until(source, expected=3)
        source.commit(before[:1])

        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(StreamUnavailableError) as caught:
            source.poll(max_messages=10, timeout=0.5)
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert f"127.0.0.1:{own_redis.port}" in message and "s3cret" not in message
        assert "stream 'outage'" in message
        with pytest.raises(StreamUnavailableError):
            source.commit(before[1:])
        sink.send([OutRecord(value=b"during")])
        with pytest.raises(SinkError, match="unreachable"):
            sink.flush(timeout=5)

        own_redis.start()
        sink.send([OutRecord(value=b"after")])
        sink.flush(timeout=5)
        after = poll_until(source, expected=1)
        assert [m.value for m in after] == [b"after"]
        source.commit(before[1:] + after)
        client = redis.Redis.from_url(own_redis.url)
        assert pending(client, topic, group) == 0
        client.close()
        client.connection_pool.disconnect()  # redis-py 5.0's close() does not
    finally:
        source.close()
        sink.close()


def test_unreachable_server_fails_open_quickly(free_tcp_port: int) -> None:
    url = f"redis://user:hunter2@{LOCALHOST}:{free_tcp_port}/0"
    started = time.monotonic()
    with pytest.raises(StreamUnavailableError, match="unreachable") as caught:
        RedisStreamSource(url, topic="t", group="g").open()
    with pytest.raises(StreamUnavailableError):
        RedisStreamSink(url, topic="t").open()
    assert time.monotonic() - started < 5
    assert "hunter2" not in str(caught.value)
    assert redact_url(url) == f"redis://user:***@{LOCALHOST}:{free_tcp_port}/0"
