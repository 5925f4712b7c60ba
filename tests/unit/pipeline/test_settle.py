"""Settling: outputs are awaited in groups, offsets committed only after them, at most
`max_in_flight` events unsettled (the source paused meanwhile), and everything settled
before partitions are revoked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from headrace.pipeline.dedupe import MemoryDedupe
from headrace.streams.base import Message, OutRecord, RevokeCallback
from headrace.streams.memory import MemorySink, MemorySource
from unit.pipeline.test_worker import Rig, event


class LoggingSink(MemorySink):
    """Logs sends and acknowledgements; can be slow to acknowledge."""

    def __init__(self, url: str, log: list[tuple[str, int]], *, flush_delay: float = 0.0):
        super().__init__(url)
        self.log = log
        self.flush_delay = flush_delay
        self.unacked = 0
        self.max_unacked = 0

    def send(self, records: Sequence[OutRecord]) -> None:
        super().send(records)
        self.unacked += len(records)
        self.max_unacked = max(self.max_unacked, self.unacked)
        self.log.append(("send", len(records)))

    def flush(self, *, timeout: float) -> None:
        time.sleep(self.flush_delay)
        super().flush(timeout=timeout)
        self.log.append(("ack", self.unacked))
        self.unacked = 0


class LoggingSource(MemorySource):
    """Logs commits, pauses and resumes."""

    def __init__(self, url: str, log: list[tuple[str, int]], **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.log = log

    def commit(self, messages: Sequence[Message]) -> None:
        super().commit(messages)
        self.log.append(("commit", len(messages)))

    def pause(self) -> None:
        super().pause()
        self.log.append(("pause", 0))

    def resume(self) -> None:
        super().resume()
        self.log.append(("resume", 0))


def logging_worker(rig: Rig, log: list[tuple[str, int]], *, flush_delay: float = 0.0) -> Any:
    worker = rig.worker(dedupe=MemoryDedupe(ttl_s=60, max_keys=10_000))
    worker.source = LoggingSource(f"memory://{rig.name}/events", log, group="scoring")
    worker.outputs = [LoggingSink(f"memory://{rig.name}/scores", log, flush_delay=flush_delay)]
    return worker


def test_offsets_are_committed_only_after_every_output_before_them_was_acknowledged() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(2000)])
    log: list[tuple[str, int]] = []
    worker = logging_worker(rig, log)
    worker.spec = msgspec.structs.replace(
        rig.spec, batch=msgspec.structs.replace(rig.spec.batch, settle_ms=10_000.0)
    )
    stats = worker.run(max_events=2000)
    assert stats.outputs == 2000 and len(rig.outputs()) == 2000
    sent = acked = committed = 0
    for what, n in log:
        if what == "send":
            sent += n
        elif what == "ack":
            acked = sent
        elif what == "commit":
            committed += n
            assert acked == sent, "a commit before the outputs sent so far were acknowledged"
    assert committed == 2000
    sends = sum(1 for what, _ in log if what == "send")
    commits = sum(1 for what, _ in log if what == "commit")
    assert commits < sends  # settled in groups, not once per batch
    assert rig.broker.lag("scoring", "events") == 0


def test_in_flight_events_stay_bounded_and_the_source_pauses_while_sinks_catch_up() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(3000)])
    log: list[tuple[str, int]] = []
    worker = logging_worker(rig, log, flush_delay=0.01)
    bound = 256
    worker.spec = msgspec.structs.replace(
        rig.spec,
        batch=msgspec.structs.replace(rig.spec.batch, settle_ms=60_000.0, max_in_flight=bound),
    )
    stats = worker.run(max_events=3000)
    assert stats.outputs == 3000
    sink = worker.outputs[0]
    assert sink.max_unacked < bound + rig.spec.batch.max_size
    pauses = [i for i, (what, _) in enumerate(log) if what == "pause"]
    resumes = [i for i, (what, _) in enumerate(log) if what == "resume"]
    assert len(pauses) >= 3000 // (bound + rig.spec.batch.max_size)
    assert len(pauses) == len(resumes)
    for p, r in zip(pauses, resumes, strict=True):  # acknowledged and committed in between
        assert [what for what, _ in log[p + 1 : r]] == ["ack", "commit"]


def test_a_repeat_of_an_unsettled_event_is_dropped() -> None:
    rig = Rig()
    rig.produce([event(i % 100) for i in range(300)])  # each id three times
    worker = rig.worker(dedupe=MemoryDedupe(ttl_s=60, max_keys=10_000))
    worker.spec = msgspec.structs.replace(
        rig.spec, batch=msgspec.structs.replace(rig.spec.batch, settle_ms=60_000.0)
    )
    stats = worker.run(max_events=300)
    assert stats.outputs == 100 and stats.deduplicated == 200
    assert sorted(o["event_id"] for o in rig.outputs()) == sorted(f"e{i}" for i in range(100))


class JoiningSource(MemorySource):
    """After its first batch, a second member joins the group; records what was committed
    when this member's revocation callback returned."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.other: MemorySource | None = None
        self.revoked: list[int] = []
        self.committed_at_revoke: dict[int, int] = {}
        self.positions_at_revoke: dict[int, int] = {}

    def open(self, *, on_revoke: RevokeCallback | None = None) -> None:
        assert on_revoke is not None

        def revoke(partitions: list[tuple[str, int]]) -> None:
            self.positions_at_revoke = dict(self._positions)
            on_revoke(partitions)
            self.revoked = [p for _, p in partitions]
            self.committed_at_revoke = self.broker.committed(self.group, self.topic)

        super().open(on_revoke=revoke)

    def poll(self, *, max_messages: int, timeout: float) -> list[Message]:
        batch = super().poll(max_messages=max_messages, timeout=timeout)
        if batch and self.other is None:
            self.other = MemorySource(self.url, group=self.group)
            self.other.open()
        return batch


def test_revocation_settles_first_so_the_next_owner_starts_right_after_what_was_emitted() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(600)])
    worker = rig.worker()
    source = JoiningSource(f"memory://{rig.name}/events", group="scoring")
    worker.source = source
    worker.spec = msgspec.structs.replace(
        rig.spec, batch=msgspec.structs.replace(rig.spec.batch, settle_ms=60_000.0)
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    deadline = time.monotonic() + 10
    while not source.revoked and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    assert source.revoked, "no rebalance happened"
    for p in source.revoked:  # every event read from a revoked partition was committed
        assert source.committed_at_revoke.get(p, 0) == source.positions_at_revoke[p]
    assert source.other is not None
    source.other.close()
