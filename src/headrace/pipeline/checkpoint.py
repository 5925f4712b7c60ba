"""What a worker sent but has not yet settled, and the settling itself.

Settling is where at-least-once is kept, so it lives apart from the loop that feeds it
(quix-streams keeps flush -> commit in `Checkpoint.commit()` the same way): the loop
adds each batch once its records were handed to the sinks, and `Checkpoint.commit`
settles everything added since the last commit in three numbered steps. The order is
the promise: an offset is committed only after every output and dead letter of the
events before it was acknowledged, and an id is recorded as emitted only after that
too, so a crash anywhere in between can only repeat events (with the same idempotency
keys), never lose one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from headrace.errors import CommitRefusedError
from headrace.pipeline.dedupe import DedupeStore
from headrace.streams.base import Message, Sink, Source

__all__ = ["Checkpoint"]

log = logging.getLogger("headrace.pipeline")


class Checkpoint:
    """The messages to commit, the ids to record and the sinks to wait for, since when.

    Parameters
    ----------
    flush_timeout
        Seconds each sink may take to acknowledge, per commit.
    name
        The pipeline's name, for the log line of a refused commit.
    """

    __slots__ = ("flush_timeout", "ids", "messages", "name", "since", "sinks")

    def __init__(self, *, flush_timeout: float, name: str) -> None:
        self.flush_timeout = flush_timeout
        self.name = name
        self.messages: list[Message] = []
        self.ids: set[str] = set()
        self.sinks: dict[int, Sink] = {}
        self.since = 0.0

    def __len__(self) -> int:
        """The events in flight: sent (or dead-lettered, or dropped), not yet settled."""
        return len(self.messages)

    def sent_to(self, sink: Sink) -> None:
        """Note that `sink` was handed records, so the next commit waits for it."""
        self.sinks[id(sink)] = sink

    def add(self, messages: Sequence[Message], ids: Sequence[str]) -> None:
        """Take a batch whose records were all handed to the sinks; `ids` are the event
        ids emitted for it (recorded by the next commit; empty without a dedupe store)."""
        if not self.messages:
            self.since = time.monotonic()
        self.messages.extend(messages)
        self.ids.update(ids)

    def commit(self, *, source: Source, dedupe: DedupeStore | None) -> bool:
        """Settle everything added so far; False when there was nothing to settle.

        `source` takes the offsets; `dedupe` records the ids (None: deduplication is
        off). They are the worker's current ones, passed in rather than kept here, since
        a worker's source may be swapped between runs.

        Raises `SinkError` (from a sink's flush) when a sink cannot acknowledge: nothing
        is recorded nor committed, and a restart redelivers.
        """
        if not self.messages:
            return False
        # 1. Wait for every sink's acknowledgement of what it was handed.
        for sink in self.sinks.values():
            sink.flush(timeout=self.flush_timeout)
        # 2. Record the emitted ids: repeats of these events are dropped from now on.
        if dedupe is not None and self.ids:
            dedupe.record(list(self.ids))
        # 3. Commit the offsets.
        try:
            source.commit(self.messages)
        except CommitRefusedError as exc:
            # Every output was acknowledged: a refused commit (the group moved on while
            # the broker stalled, a rebalance) only means these events come again, to
            # this worker or the partition's next owner, as repeats with the same
            # idempotency keys. Stopping would turn a blip into an outage.
            log.warning("%s: %s", self.name, exc)
        self.clear()
        return True

    def clear(self) -> None:
        """Forget what is in flight (a new run starts, or a commit is done)."""
        self.messages = []
        self.ids = set()
        self.sinks = {}
