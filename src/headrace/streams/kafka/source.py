"""`KafkaSource`: one member of a consumer group, committing only when told to."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from headrace.errors import CommitRefusedError, ConfigError, SourceError, StreamUnavailableError
from headrace.streams.base import Message, Partition, RevokeCallback
from headrace.streams.kafka.config import (
    CONSUMER_DEFAULTS,
    CONSUMER_PINNED,
    Start,
    _bootstrap,
    _config,
    _error_text,
    _import_kafka,
    _librdkafka_log,
    _positions,
    log,
)

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

__all__ = ["KafkaSource"]


class KafkaSource:
    """A member of a Kafka consumer group reading one topic.

    Parameters
    ----------
    bootstrap
        The bootstrap servers, ``host:port[,host:port]``.
    topic
        The topic to read.
    group
        The consumer group; workers sharing it split the topic's partitions.
    options
        librdkafka consumer settings overriding `CONSUMER_DEFAULTS`, e.g.
        ``{"session.timeout.ms": 6000}``.
    start
        Replay: an offset (on every partition; its beginning if retention removed the
        offset) or an aware `datetime` (the first message at or after it). Applied to
        each partition the first time this source is assigned it; afterwards the
        group's commits rule. `None` (default) resumes from the group's commits.
        Several replaying workers in one group may replay a partition twice when a
        rebalance moves it before its first commit: at-least-once, never a loss.
    connect_timeout
        Seconds `open` (and `poll` until the first assignment) wait for the broker
        before raising `StreamUnavailableError`.

    Notes
    -----
    Keep calling `poll` while paused or while a batch is slow: librdkafka leaves the
    group when ``max.poll.interval.ms`` (default 300 s) passes between polls.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str,
        group: str,
        options: Mapping[str, Any] | None = None,
        start: Start = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if not topic:
            raise ConfigError("KafkaSource needs a topic: pass topic='events'")
        if not group:
            raise ConfigError("KafkaSource needs a consumer group: pass group='my-pipeline'")
        self.bootstrap = _bootstrap(bootstrap)
        self.topic = topic
        self.group = group
        self.url = f"kafka://{self.bootstrap}/{topic}"
        self.connect_timeout = connect_timeout
        self._config = _config(CONSUMER_DEFAULTS, options, CONSUMER_PINNED, what="KafkaSource")
        self._start_ts: int | None = None
        self._start_offset: int | None = None
        self._started: set[int] = set()  # partitions `start` was applied to
        self._skip_below: dict[int, int] = {}  # partition -> replay offset not yet reached
        self._skip_before: dict[int, int] = {}  # partition -> replay time (ms) not yet reached
        self._set_start(start)
        self._consumer: Consumer | None = None
        self._on_revoke: RevokeCallback | None = None
        self._owned: set[int] = set()
        self._committed: dict[int, int] = {}  # our last commit per partition
        self._paused = False
        self._assigned_once = False
        self._down_since: float | None = None
        self._fatal: str | None = None
        self._callback_error: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def open(self, *, on_revoke: RevokeCallback | None = None) -> None:
        """Create the consumer, check the broker answers, and subscribe.

        Parameters
        ----------
        on_revoke
            Called inside `poll` (and `close`) with the ``(topic, partition)`` pairs
            about to be taken away (a rebalance, leaving the group, or lost after a
            session timeout): finish or drop the in-flight work of those partitions
            and `commit` what is done, before it returns. Lost partitions are no
            longer ours: commits of partitions this source does not own are skipped.
        """
        if self._consumer is not None:
            return
        kafka = _import_kafka("KafkaSource")
        config = {
            **self._config,
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "error_cb": self._on_error,
        }
        config.setdefault("logger", _librdkafka_log)
        try:
            consumer = kafka.Consumer(config)
        except kafka.KafkaException as exc:
            raise ConfigError(
                f"KafkaSource for {self.url}: invalid consumer settings: {exc.args[0]}"
            ) from exc
        try:
            metadata = consumer.list_topics(self.topic, timeout=self.connect_timeout)
        except kafka.KafkaException as exc:
            consumer.close()
            raise self._unavailable(f"no metadata: {exc.args[0]}") from exc
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            consumer.close()
            raise self._no_topic()
        self._on_revoke = on_revoke
        self._assigned_once = False
        self._down_since = self._fatal = self._callback_error = None
        consumer.subscribe(
            [self.topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )
        self._consumer = consumer

    def close(self) -> None:
        """Leave the group and drop the connection. Safe to repeat.

        Commits nothing itself; leaving the group calls the `open` ``on_revoke``
        callback one last time, so a worker may still commit what it finished.
        """
        consumer = self._consumer
        if consumer is None:
            return
        try:
            consumer.close()
        except Exception as exc:  # closing must not mask the error that led here
            log.warning("closing Kafka consumer of %s failed: %s", self.url, exc)
        finally:
            self._consumer = None
            self._owned.clear()
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error

    @property
    def assignment(self) -> list[Partition]:
        """The ``(topic, partition)`` pairs this source owns now (empty before the
        group's first assignment and after `close`)."""
        return [(self.topic, p) for p in sorted(self._owned)]

    # --- consuming ---------------------------------------------------------------------

    def poll(self, *, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages` messages, waiting at most `timeout` seconds for the first.

        Returns as soon as one message is there, with whatever else is already buffered
        locally: it never waits to fill the batch. Rebalance callbacks run in here.

        Raises
        ------
        SourceError
            A fatal consumer error, an unknown topic, or a denied authorization.
        StreamUnavailableError
            No broker answered for `connect_timeout` seconds before the first assignment.
        """
        consumer = self._require("poll")
        if max_messages < 1:
            raise ConfigError(f"poll(max_messages={max_messages}) must ask for at least 1")
        # `consume(n, timeout)` waits for all n messages or the whole timeout; the first
        # message alone must end the wait, so take it with `poll`, then what is buffered.
        first = consumer.poll(timeout)
        raw = [] if first is None else [first]
        if first is not None and max_messages > 1:
            raw.extend(consumer.consume(max_messages - 1, 0))
        self._raise_pending()
        topic = self.topic
        out: list[Message] = []
        append = out.append
        for m in cast("list[Any]", raw):
            error = m.error()
            if error is not None:
                self._message_error(error, m)
                continue
            headers = m.headers()
            ts_type, ts = m.timestamp()
            append(
                Message(
                    value=m.value() or b"",
                    topic=topic,
                    partition=m.partition(),
                    offset=m.offset(),
                    key=m.key(),
                    headers=[(k, b"" if v is None else v) for k, v in headers] if headers else [],
                    timestamp_ms=ts if ts_type else None,
                )
            )
        if out:
            self._down_since = None
            if self._skip_below or self._skip_before:
                out = self._skip_to_start(out)
        return out

    def commit(self, messages: Sequence[Message]) -> None:
        """Commit, synchronously, the offset after the last of `messages` per partition.

        Durable when it returns. Partitions this source no longer owns (a rebalance gave
        them away) are skipped: their messages go to the new owner again. Offsets at or
        below this source's last commit are skipped too, so commits never move back.

        Raises
        ------
        SourceError
            The broker refused the commit; the message names ``topic[partition]@offset``.
        """
        if not messages:
            return
        consumer = self._require("commit")
        kafka = _import_kafka("KafkaSource")
        last: dict[int, int] = {}
        for message in messages:
            offset = message.offset
            if message.topic != self.topic or not isinstance(offset, int):
                raise SourceError(
                    f"Cannot commit {message.position} on {self.url}: it did not come from "
                    "this source; commit each source's messages on that source"
                )
            if last.get(message.partition, -1) < offset:
                last[message.partition] = offset
        todo = {
            p: o + 1
            for p, o in last.items()
            if p in self._owned and self._committed.get(p, -1) < o + 1
        }
        gone = sorted(set(last) - self._owned)
        if gone:
            log.info(
                "%s: not committing partitions %s for group %s: they were reassigned and "
                "their new owner reads those messages again",
                self.url,
                gone,
                self.group,
            )
        if not todo:
            return
        offsets = [kafka.TopicPartition(self.topic, p, o) for p, o in todo.items()]
        try:
            result = consumer.commit(offsets=offsets, asynchronous=False)
        except kafka.KafkaException as exc:
            raise self._commit_error(todo, _error_text(exc.args[0])) from exc
        failed = [tp for tp in result if tp.error is not None]
        if failed:
            raise self._commit_error(
                {tp.partition: tp.offset for tp in failed}, _error_text(failed[0].error)
            )
        self._committed.update(todo)

    # --- flow control ------------------------------------------------------------------

    def lag(self) -> int | None:
        """Messages between this member's positions and the partitions' ends (None if unknown).

        Asks the broker for the high watermarks, so call it seldom (the worker does once
        per stats interval). On Tansu the reported end is the start of the last batch plus
        one, so lag reads low there.
        """
        lags = self.partition_lag()
        return None if lags is None else sum(lags.values())

    def partition_lag(self) -> dict[Partition, int] | None:
        """`lag` per owned partition (one not yet read from counts 0); None if unknown."""
        consumer = self._consumer
        if consumer is None or not self._owned:
            return None
        from confluent_kafka import TopicPartition

        lags: dict[Partition, int] = {}
        try:
            positions = consumer.position(
                [TopicPartition(self.topic, partition) for partition in sorted(self._owned)]
            )
            for tp in positions:
                _low, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
                lags[(self.topic, tp.partition)] = max(0, high - tp.offset) if tp.offset >= 0 else 0
        except Exception as exc:  # lag is a report, never a reason to stop consuming
            log.debug("lag of %s unavailable: %s", self.url, exc)
            return None
        return lags

    def pause(self) -> None:
        """Stop fetching; partitions assigned later start paused too, until `resume`."""
        self._paused = True
        consumer = self._consumer
        if consumer is not None and self._owned:
            consumer.pause(consumer.assignment())

    def resume(self) -> None:
        """Fetch again after a `pause`."""
        self._paused = False
        consumer = self._consumer
        if consumer is not None and self._owned:
            consumer.resume(consumer.assignment())

    # --- replay ------------------------------------------------------------------------

    def seek_to_offset(self, offset: int) -> None:
        """Read every partition from `offset` (from its beginning when retention already
        removed `offset`; from when it gets there when `offset` is past its end).

        Applies at once to the partitions owned now and, like ``start``, to those
        assigned later. Messages already returned by `poll` are not taken back.
        """
        self._set_start(offset)
        self._seek_owned()

    def seek_to_time(self, ts_ms: int) -> None:
        """Read every partition from its first message at or after `ts_ms` (epoch ms).

        Partitions with no such message move to their end. Applies like `seek_to_offset`.
        """
        if ts_ms < 0:
            raise ConfigError(f"seek_to_time({ts_ms}): a time is epoch milliseconds >= 0")
        self._set_start(None)
        self._start_ts = ts_ms
        self._seek_owned()

    def _set_start(self, start: Start) -> None:
        self._start_offset = self._start_ts = None
        self._started.clear()
        self._skip_below.clear()
        self._skip_before.clear()
        if start is None:
            return
        if isinstance(start, datetime):
            if start.tzinfo is None:
                raise ConfigError(
                    f"Replay start {start.isoformat()} has no time zone: give one, e.g. "
                    f"'{start.isoformat()}+00:00' for UTC"
                )
            self._start_ts = int(start.timestamp() * 1000)
        elif isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            self._start_offset = start
        else:
            raise ConfigError(
                f"Replay start {start!r} is neither an offset >= 0 nor a datetime: "
                "pass e.g. start=0 or start=datetime(2024, 5, 1, tzinfo=UTC)"
            )

    def _seek_owned(self) -> None:
        consumer = self._consumer
        if consumer is None or not self._owned:
            return
        kafka = _import_kafka("KafkaSource")
        partitions = [kafka.TopicPartition(self.topic, p) for p in sorted(self._owned)]
        self._resolve_start(consumer, partitions)
        for tp in partitions:
            try:
                consumer.seek(tp)
            except kafka.KafkaException as exc:
                raise SourceError(
                    f"Seeking {self.topic}[{tp.partition}]@{tp.offset} on {self.url} failed: "
                    f"{_error_text(exc.args[0])}; poll once so the partition starts "
                    "fetching, then seek again"
                ) from exc
        self._raise_pending()

    def _resolve_start(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Set the offset of each partition `start` still applies to; remember them."""
        todo = [tp for tp in partitions if tp.partition not in self._started]
        if not todo or (self._start_offset is None and self._start_ts is None):
            return
        kafka = _import_kafka("KafkaSource")
        try:
            if self._start_ts is not None:
                query = [
                    kafka.TopicPartition(tp.topic, tp.partition, self._start_ts) for tp in todo
                ]
                found = consumer.offsets_for_times(query, timeout=self.connect_timeout)
                for tp, hit in zip(todo, found, strict=True):
                    tp.offset = hit.offset if hit.offset >= 0 else kafka.OFFSET_END
            else:
                start = cast(int, self._start_offset)
                for tp in todo:
                    low, high = consumer.get_watermark_offsets(tp, timeout=self.connect_timeout)
                    tp.offset = min(max(start, low), high)
        except kafka.KafkaException as exc:
            where = self._start_ts if self._start_ts is not None else self._start_offset
            self._callback_error = SourceError(
                f"Cannot find where to replay {self.topic} from ({where}) on {self.url}: "
                f"{_error_text(exc.args[0])}; check the broker and retry"
            )
            return
        for tp in todo:
            self._started.add(tp.partition)
            self._committed.pop(tp.partition, None)  # a replay's commits may move back
            if self._start_ts is not None:
                self._skip_before[tp.partition] = self._start_ts
            else:
                self._skip_below[tp.partition] = cast(int, self._start_offset)

    def _skip_to_start(self, messages: list[Message]) -> list[Message]:
        """Drop messages a broker's offset lookup let through before the replay start.

        Brokers may answer offset lookups loosely (Tansu 0.6 answers every time lookup
        with the earliest offset and reports the end of a partition as the start of its
        last batch), so the lookup only gives a place at or before the start; this drops
        what precedes it, per partition, until the first message at or after it.
        """
        kept: list[Message] = []
        for message in messages:
            partition = message.partition
            below = self._skip_below.get(partition)
            if below is not None:
                if cast(int, message.offset) < below:
                    continue
                del self._skip_below[partition]
            before = self._skip_before.get(partition)
            if before is not None:
                if message.timestamp_ms is not None and message.timestamp_ms < before:
                    continue
                del self._skip_before[partition]
            kept.append(message)
        return kept

    # --- librdkafka callbacks (run inside consume/close) -------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._resolve_start(consumer, partitions)
        consumer.assign(partitions)
        if self._paused and partitions:
            consumer.pause(partitions)
        self._owned.update(tp.partition for tp in partitions)
        self._assigned_once = True
        self._down_since = None
        log.info(
            "%s: group %s assigned %s",
            self.url,
            self.group,
            sorted(tp.partition for tp in partitions),
        )

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The worker commits what it finished while the partitions are still ours.
        self._call_revoke(partitions)
        self._disown(partitions)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (session timed out): commits would be refused, so disown first.
        self._disown(partitions)
        self._call_revoke(partitions)

    def _call_revoke(self, partitions: list[TopicPartition]) -> None:
        log.info(
            "%s: group %s revokes %s",
            self.url,
            self.group,
            sorted(tp.partition for tp in partitions),
        )
        if self._on_revoke is None:
            return
        try:
            self._on_revoke([(tp.topic, tp.partition) for tp in partitions])
        except BaseException as exc:  # re-raised from `poll` once librdkafka is done
            self._callback_error = self._callback_error or exc

    def _disown(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._owned.discard(tp.partition)
            self._skip_below.pop(tp.partition, None)
            self._skip_before.pop(tp.partition, None)
            if self._committed.pop(tp.partition, None) is None:
                # No commit since `start` applied: whoever gets it next replays it too.
                self._started.discard(tp.partition)

    def _on_error(self, error: KafkaError) -> None:
        name = error.name()
        if error.fatal():
            self._fatal = self._fatal or _error_text(error)
        elif name == "_ALL_BROKERS_DOWN":
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("%s: every Kafka broker is unreachable (%s)", self.url, error.str())
        elif name != "_TRANSPORT":  # transport errors are librdkafka's to retry (and log)
            log.warning("%s: %s", self.url, _error_text(error))

    # --- errors ------------------------------------------------------------------------

    def _raise_pending(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error
        if self._fatal is not None:
            raise SourceError(
                f"Kafka consumer of {self.url} (group {self.group}) failed fatally: "
                f"{self._fatal}; close the source and open a new one"
            )
        if (
            not self._assigned_once
            and self._down_since is not None
            and time.monotonic() - self._down_since > self.connect_timeout
        ):
            raise self._unavailable(f"unreachable for over {self.connect_timeout:g}s")

    def _message_error(self, error: KafkaError, message: Any) -> None:
        name = error.name()
        if name == "_PARTITION_EOF":
            return
        where = f"{self.topic}[{message.partition()}]@{message.offset()}"
        if name in ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION"):
            raise self._no_topic()
        if "AUTHORIZATION" in name:
            raise SourceError(
                f"Kafka denied group '{self.group}' access to {where}: {_error_text(error)}; "
                "grant the consumer's principal READ on the topic and group"
            )
        if error.fatal():
            raise SourceError(f"Kafka consumer failed at {where}: {_error_text(error)}")
        log.warning("%s: %s at %s", self.url, _error_text(error), where)

    def _no_topic(self) -> SourceError:
        return SourceError(
            f"Topic '{self.topic}' does not exist on {self.bootstrap}: create it, or fix the "
            "topic name in the pipeline"
        )

    def _commit_error(self, offsets: Mapping[int, int], reason: str) -> SourceError:
        refused = any(
            code in reason
            for code in (
                "UNKNOWN_MEMBER_ID",
                "ILLEGAL_GENERATION",
                "REBALANCE_IN_PROGRESS",
                "Unknown member",
                "Illegal generation",
                "rebalance",
            )
        )
        return (CommitRefusedError if refused else SourceError)(
            f"Committing {_positions(self.topic, offsets)} for group '{self.group}' on "
            f"{self.bootstrap} failed: {reason}; the messages will be delivered again "
            "(a rebalance or a broker outage usually explains it)"
        )

    def _unavailable(self, detail: str) -> StreamUnavailableError:
        return StreamUnavailableError(
            f"Kafka at {self.bootstrap} is not reachable for topic '{self.topic}' ({detail}): "
            "check the broker is running and the bootstrap address is right"
        )

    def _require(self, action: str) -> Consumer:
        if self._consumer is None:
            raise SourceError(f"Cannot {action} on {self.url}: call open() first")
        return self._consumer
