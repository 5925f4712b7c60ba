"""The checkpoint on its own: settling waits for every sink it was handed, records the
ids, then commits, in that order; a sink that cannot acknowledge leaves everything in
flight; a refused commit still settles (the outputs were acknowledged).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from headrace.errors import CommitRefusedError, SinkError
from headrace.pipeline.checkpoint import Checkpoint
from headrace.pipeline.dedupe import MemoryDedupe
from headrace.streams.base import Message, OutRecord
from headrace.streams.memory import MemorySink, broker
from unit.pipeline.test_settle import LoggingSink, LoggingSource


class LoggingDedupe(MemoryDedupe):
    """Logs what is recorded."""

    def __init__(self, log: list[tuple[str, int]]) -> None:
        super().__init__(ttl_s=60, max_keys=1000)
        self.log = log

    def record(self, event_ids: Sequence[str]) -> None:
        super().record(event_ids)
        self.log.append(("record", len(event_ids)))


class Setup:
    """A topic of `n` events, a logging source that polled them, two logging sinks."""

    def __init__(self, n: int) -> None:
        self.name = f"ckpt-{uuid.uuid4().hex[:8]}"
        self.broker = broker(self.name)
        self.broker.create_topic("events", partitions=1)
        self.broker.append("events", [OutRecord(value=b"{}") for _ in range(n)])
        self.log: list[tuple[str, int]] = []
        self.source = LoggingSource(f"memory://{self.name}/events", self.log, group="g")
        self.source.open()
        self.messages: list[Message] = self.source.poll(max_messages=n, timeout=1.0)
        self.sinks = [
            LoggingSink(f"memory://{self.name}/{topic}", self.log) for topic in ("out", "dlq")
        ]
        for sink in self.sinks:
            sink.open()
        self.dedupe = LoggingDedupe(self.log)


def test_commit_flushes_every_sink_then_records_the_ids_then_commits() -> None:
    setup = Setup(10)
    checkpoint = Checkpoint(flush_timeout=1.0, name="scoring")
    assert not checkpoint.commit(source=setup.source, dedupe=setup.dedupe)  # nothing yet
    out, dlq = setup.sinks
    out.send([OutRecord(value=b"1")] * 8)
    checkpoint.sent_to(out)
    dlq.send([OutRecord(value=b"x")] * 2)
    checkpoint.sent_to(dlq)
    checkpoint.add(setup.messages, [f"e{i}" for i in range(8)])
    assert len(checkpoint) == 10
    setup.log.clear()
    assert checkpoint.commit(source=setup.source, dedupe=setup.dedupe)
    assert setup.log == [("ack", 8), ("ack", 2), ("record", 8), ("commit", 10)]
    assert len(checkpoint) == 0 and not checkpoint.ids and not checkpoint.sinks
    assert setup.dedupe.seen([f"e{i}" for i in range(9)]) == [True] * 8 + [False]
    assert setup.broker.lag("g", "events") == 0


def test_a_sink_that_cannot_acknowledge_leaves_everything_in_flight() -> None:
    setup = Setup(5)
    checkpoint = Checkpoint(flush_timeout=1.0, name="scoring")
    sink = MemorySink(f"memory://{setup.name}/out")
    sink.open()
    sink.send([OutRecord(value=b"1")] * 5)
    checkpoint.sent_to(sink)
    checkpoint.add(setup.messages, ["a", "b"])
    setup.broker.fail_next_flush("out")
    with pytest.raises(SinkError):
        checkpoint.commit(source=setup.source, dedupe=setup.dedupe)
    assert len(checkpoint) == 5 and checkpoint.ids == {"a", "b"}
    assert setup.dedupe.seen(["a", "b"]) == [False, False]  # not recorded
    assert setup.broker.lag("g", "events") == 5  # nothing committed


class RefusingSource(LoggingSource):
    def commit(self, messages: Sequence[Message]) -> None:
        raise CommitRefusedError("Unknown member (UNKNOWN_MEMBER_ID)")


def test_a_refused_commit_is_logged_and_still_settles(caplog: pytest.LogCaptureFixture) -> None:
    setup = Setup(3)
    source = RefusingSource(f"memory://{setup.name}/events", setup.log, group="g")
    checkpoint = Checkpoint(flush_timeout=1.0, name="scoring")
    checkpoint.add(setup.messages, ["a"])
    assert checkpoint.commit(source=source, dedupe=None)
    assert "scoring: Unknown member" in caplog.text
    assert len(checkpoint) == 0
