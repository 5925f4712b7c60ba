"""The stream worker: poll, decode, dedupe, score, send; settle; commit.

Each batch is decoded, deduplicated, scored and sent to the sinks as soon as it is
polled; acknowledgements are awaited together when the worker *settles* (every
`BatchSpec.settle_ms`, when the source runs dry, before partitions are revoked, at the
`BatchSpec.max_in_flight` bound and on shutdown). Settling waits for every sink's
acknowledgement, then records the emitted ids, then commits the offsets, so the promise
stays simple to check: an offset is committed only after every output and dead letter of
the events before it was acknowledged, and an id is recorded as emitted only after that
too. A crash anywhere before the commit redelivers the unsettled events; with a dedupe
store, repeats of settled ones are dropped, and ids sent but unsettled are dropped too
while this worker lives.

Bad events (oversized, undecodable, invalid, missing id, poisonous for the model) become
dead letters with their reason; they never stop the worker nor delay the good events of
their batch. A sink that cannot acknowledge stops the worker without committing: a
restart redelivers, nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from headrace.errors import CommitRefusedError, ConfigError
from headrace.inference.json_batch import DecodedBatch, TypedBatchDecoder
from headrace.inference.service import InferenceService
from headrace.monitoring.metrics import WorkerMetrics, source_lag
from headrace.pipeline.dedupe import DedupeStore
from headrace.pipeline.observe import BatchView, Monitors
from headrace.pipeline.records import dead_letter_record, output_records
from headrace.pipeline.spec import PipelineSpec
from headrace.pipeline.stats import WorkerStats
from headrace.streams.base import Message, OutRecord, Partition, Sink, Source

__all__ = ["Worker"]

log = logging.getLogger("headrace.pipeline")

_ID_TYPES = (str, int)


def _event_time_ms(value: Any) -> int | None:
    """Epoch milliseconds from epoch seconds or an ISO-8601 string; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value * 1000)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1000)
        except ValueError:
            return None
    return None


class Worker:
    """Runs one pipeline: a source, the inference core, output sinks, a dead-letter sink.

    Parameters
    ----------
    spec
        The pipeline spec (batching, limits, id field).
    service
        The inference core for the release the spec names.
    source, outputs, dead_letter
        Opened by `run`, closed when it returns.
    dedupe
        Where emitted event ids are remembered; None turns deduplication off.
    on_stats
        Called with the stats every ``spec.stats_interval_s`` seconds.
    metrics
        Where to report Prometheus metrics (per batch, per settle, lag per stats tick).
    monitors
        Traces, payload samples and live accuracy (per batch and per settle).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        *,
        service: InferenceService,
        source: Source,
        outputs: Sequence[Sink],
        dead_letter: Sink,
        dedupe: DedupeStore | None,
        on_stats: Callable[[WorkerStats], None] | None = None,
        metrics: WorkerMetrics | None = None,
        monitors: Monitors | None = None,
    ) -> None:
        self.spec = spec
        self.service = service
        self.source = source
        self.outputs = list(outputs)
        self.dead_letter = dead_letter
        self.dedupe = dedupe
        self.on_stats = on_stats
        self.stats = WorkerStats()
        self._loads = orjson.loads
        self._flush_timeout = max(spec.shutdown_timeout_s, 1.0)
        self._in_flight = _InFlight()
        self._fast = _fast_decoder(spec, service)
        self.metrics = metrics
        self.monitors = monitors
        if metrics is not None:
            metrics.watch_in_flight(lambda: len(self._in_flight))

    # -- one batch --------------------------------------------------------------------

    def process(self, messages: Sequence[Message]) -> None:
        """Score one batch and send its records; `settle` commits it later.

        At the bound of `BatchSpec.max_in_flight` unsettled events, pauses the source and
        settles before returning, so at most that many events are ever in flight.
        """
        started = time.perf_counter()
        started_ns = time.time_ns()
        spec = self.spec
        time_field = spec.event_time_field

        decoded = self._decode_fast(messages)
        if decoded is None:
            candidates, event_ids, records, failures = self._decode(messages)
            raw_times = (
                None
                if time_field is None
                else [r.get(time_field) if isinstance(r, dict) else None for r in records]
            )
        else:
            candidates = list(range(len(messages)))
            event_ids = decoded.ids if decoded.ids is not None else [m.position for m in messages]
            records = []
            failures = []
            raw_times = decoded.times
        decoded_at = time.perf_counter()

        keep = self._fresh(event_ids)
        duplicates = len(event_ids) - len(keep) if keep is not None else 0
        if keep is not None:
            candidates = [candidates[j] for j in keep]
            event_ids = [event_ids[j] for j in keep]
            if raw_times is not None:
                raw_times = [raw_times[j] for j in keep]
            if decoded is None:
                records = [records[j] for j in keep]
        fresh_at = time.perf_counter()

        if decoded is None:
            result = self.service.infer_records(records)
        else:
            columns = decoded.columns
            if keep is not None:
                index = np.asarray(keep, dtype=np.intp)
                columns = {name: column[index] for name, column in columns.items()}
            result = self.service.infer(columns, n_rows=len(candidates))
        scored_at = time.perf_counter()
        for rejection in result.rejections:
            failures.append(
                (candidates[rejection.row], rejection.stage, rejection.reason, rejection.field)
            )
        scored = result.rows.tolist()
        scored_messages = [messages[candidates[r]] for r in scored]
        scored_ids = [event_ids[r] for r in scored]
        if raw_times is None:
            times = [m.timestamp_ms for m in scored_messages]
        else:
            times = [
                _event_time_ms(raw_times[r]) or scored_messages[j].timestamp_ms
                for j, r in enumerate(scored)
            ]
        now_ms = int(time.time() * 1000)
        outputs = output_records(
            scored_messages,
            event_ids=scored_ids,
            predictions=result.predictions.tolist(),
            scores=None if result.scores is None else result.scores.tolist(),
            event_times_ms=times,
            release=result.release,
            release_digest=result.release_digest,
            processed_at_ms=now_ms,
        )
        dead: list[OutRecord] = [
            dead_letter_record(
                messages[i],
                stage=stage,
                error=error,
                field=field,
                pipeline=spec.name,
                release=result.release,
                at_ms=now_ms,
            )
            for i, stage, error, field in failures
        ]
        view = None
        if self.monitors is not None:
            ns = [started_ns + int((t - started) * 1e9) for t in (decoded_at, fresh_at)]
            view = BatchView(
                messages, candidates, event_ids, records,
                None if decoded is None else decoded.columns, result, scored, scored_ids,
                failures, outputs, dead, (started_ns, ns[0], ns[1]), now_ms,
            )  # fmt: skip
            self.monitors.on_batch(view)  # may set trace headers on the records
        self._send(outputs, dead)
        if view is not None:
            view.sent_ns = time.time_ns()
        self._in_flight.add(messages, scored_ids if self.dedupe is not None else ())

        stats = self.stats
        stats.batches += 1
        stats.events += len(messages)
        stats.outputs += len(outputs)
        stats.dead_letters += len(dead)
        stats.deduplicated += duplicates
        for _, stage, error, _ in failures:
            stats.dead_letter_reasons[f"{stage}: {_reason_class(error)}"] += 1
        done = time.perf_counter()
        stats.batch_latency_ms.add(np.full(len(messages), (done - started) * 1000.0))
        stamped = [t for t in times if t is not None]
        latencies = now_ms - np.asarray(stamped, dtype=np.float64) if stamped else None
        if latencies is not None:
            stats.end_to_end_ms.add(latencies)
        if self.metrics is not None:
            self.metrics.observe_batch(
                result.release,
                events=len(messages),
                outputs=len(outputs),
                deduplicated=duplicates,
                dead_letter_stages=[stage for _, stage, _, _ in failures],
                end_to_end_ms=latencies,
                marks=(started, decoded_at, fresh_at, scored_at, done),
            )

        if len(self._in_flight) >= spec.batch.max_in_flight:
            # Full: stop fetching until every sink caught up (backpressure).
            self.source.pause()
            try:
                self.settle()
            finally:
                self.source.resume()

    def _decode_fast(self, messages: Sequence[Message]) -> DecodedBatch | None:
        """The whole batch through the typed decoder, or None for the per-event path."""
        fast = self._fast
        if fast is None:
            return None
        max_bytes = self.spec.limits.max_event_bytes
        values = [m.value for m in messages]
        if max(map(len, values)) > max_bytes:
            return None
        return fast.decode(values)

    def _decode(
        self, messages: Sequence[Message]
    ) -> tuple[list[int], list[str], list[Any], list[_Failure]]:
        """Per event: size check, JSON decode, id; returns what decoded and what failed."""
        spec = self.spec
        max_bytes = spec.limits.max_event_bytes
        id_field = spec.id_field
        loads = self._loads
        failures: list[_Failure] = []
        candidates: list[int] = []
        records: list[Any] = []
        event_ids: list[str] = []
        for i, message in enumerate(messages):
            size = len(message.value)
            if size > max_bytes:
                failures.append(
                    (
                        i,
                        "decode",
                        f"Event of {size} bytes exceeds the limit of {max_bytes} "
                        "bytes (limits.max_event_bytes)",
                        None,
                    )
                )
                continue
            try:
                record = loads(message.value)
            except orjson.JSONDecodeError as exc:
                record = _lenient_loads(message.value)
                if record is _UNDECODABLE:
                    failures.append((i, "decode", f"Invalid JSON: {exc}", None))
                    continue
            if id_field is None:
                event_id = message.position
            else:
                raw = record.get(id_field) if isinstance(record, dict) else None
                if not isinstance(raw, _ID_TYPES) or isinstance(raw, bool):
                    problem = "Missing" if raw is None else "Expected `str` or `int` for"
                    failures.append(
                        (
                            i,
                            "validate",
                            f"{problem} id field `{id_field}` - at `$.{id_field}`",
                            id_field,
                        )
                    )
                    continue
                event_id = str(raw)
            candidates.append(i)
            records.append(record)
            event_ids.append(event_id)
        return candidates, event_ids, records, failures

    def _fresh(self, event_ids: list[str]) -> list[int] | None:
        """Indices of the ids not emitted before (nor earlier in the batch); None = all."""
        if self.dedupe is None or not event_ids:
            return None
        seen = self.dedupe.seen(event_ids)
        unsettled = self._in_flight.ids
        first: set[str] = set()
        keep: list[int] = []
        for j, event_id in enumerate(event_ids):
            if seen[j] or event_id in first or event_id in unsettled:
                continue
            first.add(event_id)
            keep.append(j)
        return None if len(keep) == len(event_ids) else keep

    def _send(self, outputs: list[OutRecord], dead: list[OutRecord]) -> None:
        """Hand records to the sinks; acknowledgements are awaited by `settle`."""
        if outputs:
            for sink in self.outputs:
                sink.send(outputs)
                self._in_flight.sinks[id(sink)] = sink
        if dead:
            self.dead_letter.send(dead)
            self._in_flight.sinks[id(self.dead_letter)] = self.dead_letter

    def settle(self) -> None:
        """Wait for every sink's acknowledgement, record the ids, commit the offsets.

        In that order, so a crash anywhere in between can only repeat events (with the
        same idempotency keys), never lose one. Raises `SinkError` when a sink cannot
        acknowledge: nothing is committed and a restart redelivers.
        """
        pending = self._in_flight
        if not pending.messages:
            return
        started = time.perf_counter()
        for sink in pending.sinks.values():
            sink.flush(timeout=self._flush_timeout)
        if self.dedupe is not None and pending.ids:
            self.dedupe.record(list(pending.ids))
        try:
            self.source.commit(pending.messages)
        except CommitRefusedError as exc:
            # Every output was acknowledged: a refused commit (the group moved on while
            # the broker stalled, a rebalance) only means these events come again, to
            # this worker or the partition's next owner, as repeats with the same
            # idempotency keys. Stopping would turn a blip into an outage.
            log.warning("%s: %s", self.spec.name, exc)
        pending.clear()
        if self.metrics is not None:
            self.metrics.observe_settle(time.perf_counter() - started)
        if self.monitors is not None:
            self.monitors.on_settle(time.time_ns() - int((time.perf_counter() - started) * 1e9))

    # -- the loop ---------------------------------------------------------------------

    def _on_revoke(self, partitions: list[Partition]) -> None:
        # Settle while the partitions are still ours: the next owner starts right after
        # what this worker emitted, neither losing nor repeating events.
        log.info("%s: partitions revoked: %s", self.spec.name, partitions)
        self.settle()

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        until_exhausted: bool = False,
        max_events: int | None = None,
    ) -> WorkerStats:
        """Process batches until `stop` is set (or the source is exhausted, or
        `max_events` were processed); then settle, close the sinks and the source.
        """
        stop = stop or threading.Event()
        spec = self.spec
        if until_exhausted and not hasattr(self.source, "exhausted"):
            raise ConfigError(
                f"{spec.name}: --until-end needs a source with an end (file://); "
                f"'{self.source.url}' streams forever. Stop the worker with SIGTERM instead."
            )
        wait_s = spec.batch.max_wait_ms / 1000.0
        idle_wait = max(wait_s, 0.1)
        settle_s = spec.batch.settle_ms / 1000.0
        self.stats = WorkerStats()
        self._in_flight.clear()
        next_stats = time.monotonic() + spec.stats_interval_s
        for sink in [*self.outputs, self.dead_letter]:
            sink.open()
        self.source.open(on_revoke=self._on_revoke)
        try:
            if self.monitors is not None:
                self.monitors.open()
            idle = False
            while not stop.is_set():
                messages = self.source.poll(
                    max_messages=spec.batch.max_size, timeout=idle_wait if idle else wait_s
                )
                idle = not messages
                if messages:
                    self.process(messages)
                in_flight = self._in_flight
                if in_flight.messages and (idle or time.monotonic() - in_flight.since >= settle_s):
                    self.settle()
                if idle and until_exhausted and getattr(self.source, "exhausted", False):
                    break
                if max_events is not None and self.stats.events >= max_events:
                    break
                reporting = self.on_stats is not None or self.metrics is not None
                if reporting and time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + spec.stats_interval_s
                    lags = source_lag(self.source)
                    self.stats.lag = None if lags is None else sum(lags.values())
                    if self.metrics is not None:
                        self.metrics.observe_lag(lags)
                    if self.on_stats is not None:
                        self.on_stats(self.stats)
            self.settle()
        finally:
            self._close()
        return self.stats

    def _close(self) -> None:
        errors: list[BaseException] = []
        for closer in [*(s.close for s in self.outputs), self.dead_letter.close, self.source.close]:
            try:
                closer()
            except Exception as exc:  # close everything, report the first failure
                errors.append(exc)
        if self.dedupe is not None:
            self.dedupe.close()
        if self.monitors is not None:
            self.monitors.close()
        if errors:
            log.warning("%s: error while closing: %s", self.spec.name, errors[0])


_UNDECODABLE = object()

_Failure = tuple[int, str, str, str | None]
"""(index in the batch, stage, error, field) of an event that becomes a dead letter."""


class _InFlight:
    """What was sent but not yet settled: the messages to commit, the ids to record,
    the sinks to wait for, and since when."""

    __slots__ = ("ids", "messages", "since", "sinks")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.ids: set[str] = set()
        self.sinks: dict[int, Sink] = {}
        self.since = 0.0

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, messages: Sequence[Message], ids: Sequence[str]) -> None:
        if not self.messages:
            self.since = time.monotonic()
        self.messages.extend(messages)
        self.ids.update(ids)

    def clear(self) -> None:
        self.messages = []
        self.ids = set()
        self.sinks = {}


def _fast_decoder(spec: PipelineSpec, service: InferenceService) -> TypedBatchDecoder | None:
    """The typed batch decoder for this schema, or None where it cannot apply."""
    if spec.id_field is not None and spec.id_field in service.schema.names:
        return None  # the id doubles as a feature: the per-event path handles that
    return TypedBatchDecoder(
        service.schema, id_field=spec.id_field, time_field=spec.event_time_field
    )


def _lenient_loads(raw: bytes) -> Any:
    """The slow path for what orjson refuses: NaN/Infinity tokens (Python's json takes
    them, so the schema can reject the value with a precise reason) or nothing.
    """
    import json

    try:
        return json.loads(raw)
    except ValueError:
        return _UNDECODABLE


def _reason_class(error: str) -> str:
    """A short, low-cardinality form of a reason for counting: no event values in it.

    Reasons name types, fields and paths, never values, except those starting with
    ``Value`` (range and category failures), which are reduced to their kind.
    """
    head, _, where = error.partition(" - at ")
    location = f" at {where.strip('`')}" if where else ""
    if head.startswith("Invalid JSON"):
        return "invalid JSON"
    if head.startswith("Event of"):
        return "event too large"
    if head.startswith("Value"):
        if " above " in head or " below " in head:
            return "out of range" + location
        return "value not allowed" + location
    return head[:80] + location
