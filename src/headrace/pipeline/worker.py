"""The stream worker: poll, decode, dedupe, score, send; settle; commit.

Each batch is decoded, deduplicated, scored and sent to the sinks as soon as it is
polled; acknowledgements are awaited together when the worker *settles* (every
`BatchSpec.settle_ms`, when the source runs dry, before partitions are revoked, at the
`BatchSpec.max_in_flight` bound and on shutdown). Settling (`Checkpoint.commit`) waits
for every sink's acknowledgement, then records the emitted ids, then commits the offsets,
so the promise stays simple to check: an offset is committed only after every output and
dead letter of the events before it was acknowledged, and an id is recorded as emitted
only after that too. A crash anywhere before the commit redelivers the unsettled events;
with a dedupe store, repeats of settled ones are dropped, and ids sent but unsettled are
dropped too while this worker lives.

Bad events (oversized, undecodable, invalid, missing id, poisonous for the model) become
dead letters with their reason; they never stop the worker nor delay the good events of
their batch. A sink that cannot acknowledge stops the worker without committing: a
restart redelivers, nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from headrace._redact import redact_url
from headrace.errors import ConfigError
from headrace.inference.service import InferenceResult, InferenceService
from headrace.inference.validate import records_to_columns, validate
from headrace.monitoring.metrics import WorkerMetrics, source_lag
from headrace.pipeline.checkpoint import Checkpoint
from headrace.pipeline.decode import (
    TEXT_ROW_HEADERS,
    DecodedEvents,
    EventDecoder,
    Failure,
    event_kind,
    subset_events,
)
from headrace.pipeline.dedupe import DedupeStore
from headrace.pipeline.observe import Monitors
from headrace.pipeline.outcome import BatchOutcome
from headrace.pipeline.records import dead_letter_record, output_records
from headrace.pipeline.route import Part, route
from headrace.pipeline.spec import PipelineSpec
from headrace.pipeline.stats import WorkerStats
from headrace.rollout.evidence import StepEvidence
from headrace.rollout.follow import ReleaseFollower
from headrace.rollout.participant import RolloutParticipant
from headrace.rollout.routing import Routing
from headrace.streams.base import Message, OutRecord, Partition, Sink, Source
from headrace.types import Array, Columns

__all__ = ["Worker"]

log = logging.getLogger("headrace.pipeline")


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
    follower
        Keeps the releases current (alias moves, rollouts); None scores `service` only.
    participant
        Collects per-arm evidence during a rollout and judges while holding its lease.
    shadow_sink
        Where a shadowing candidate's outputs go (never to `outputs`).
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
        follower: ReleaseFollower | None = None,
        participant: RolloutParticipant | None = None,
        shadow_sink: Sink | None = None,
    ) -> None:
        self.spec = spec
        self.service = service
        self.follower = follower
        self.participant = participant
        self.shadow_sink = shadow_sink
        self._routing = follower.current if follower is not None else Routing(baseline=service)
        self._routed = 0
        self.source = source
        self.outputs = list(outputs)
        self.dead_letter = dead_letter
        self.dedupe = dedupe
        self.on_stats = on_stats
        self.stats = WorkerStats()
        self._in_flight = Checkpoint(
            flush_timeout=max(spec.shutdown_timeout_s, 1.0), name=spec.name
        )
        self._decoder = self._make_decoder(self._routing.baseline)
        self.metrics = metrics
        self.monitors = monitors
        if metrics is not None:
            metrics.watch_in_flight(lambda: len(self._in_flight))

    # -- one batch --------------------------------------------------------------------

    def process(self, messages: Sequence[Message]) -> None:
        """Score one batch and send its records; `settle` commits it later.

        The stages of DESIGN.md's flow, each one named call: decode, dedupe, (enrich: not
        built yet), route (the baseline, or during a rollout each event's arm), validate
        and predict (one call into the inference core per part, after dedupe so repeats
        cost no model time), postprocess, sinks. At the bound of
        `BatchSpec.max_in_flight` unsettled events, pauses the source and settles before
        returning, so at most that many events are ever in flight.
        """
        cut, csv = _first_kind_change(messages)
        if cut is not None:  # CSV rows among JSON events: each run decoded as its kind
            self.process(messages[:cut])
            self.process(messages[cut:])
            return
        routing = self._current_routing()  # a switch takes effect between batches
        started = time.perf_counter()
        started_ns = time.time_ns()
        decoded = self._decoder.decode(messages, csv=csv)
        decoded_at = time.perf_counter()
        fresh = self._drop_repeats(decoded)
        deduplicated = len(messages) - len(decoded.failures) - len(fresh.candidates)
        fresh_at = time.perf_counter()
        # enrich: online features would join `fresh` here (features part, not built yet).
        parts = route(routing, fresh, keys=self._keys(fresh, routing), timed=self._time_this())
        stamps_ns = (
            started_ns,
            started_ns + int((decoded_at - started) * 1e9),
            started_ns + int((fresh_at - started) * 1e9),
        )
        scored = [self._score_part(part) for part in parts]
        scored_at = time.perf_counter()
        outcomes: list[BatchOutcome] = []
        shadow: list[OutRecord] = []
        for k, (part, (result, events, _)) in enumerate(zip(parts, scored, strict=True)):
            outcome = self._postprocess(
                messages,
                decoded=decoded,
                scored=events,
                result=result,
                service=part.service,
                deduplicated=deduplicated if k == 0 else 0,
                stamps_ns=stamps_ns,
            )
            if part.shadow:
                shadow.extend(outcome.outputs)  # its failures are evidence, not dead letters
            else:
                outcomes.append(outcome)
        if routing.rollout_id is not None:
            self._record_evidence(routing, parts, scored)
            if len(outcomes) > 1 and self.monitors is not None:
                _mark_routed(outcomes, n_messages=len(messages))
        if self.monitors is not None:
            for outcome in outcomes:
                self.monitors.on_batch(outcome)  # may set trace headers on the records
        outputs = [r for o in outcomes for r in o.outputs]
        dead = [r for o in outcomes for r in o.dead]
        self._send(outputs, dead, shadow)
        if self.monitors is not None:
            sent_ns = time.time_ns()
            for outcome in outcomes:
                outcome.sent_ns = sent_ns
        ids = [i for o in outcomes for i in o.scored_ids] if self.dedupe is not None else ()
        self._in_flight.add(messages, ids)
        self._account(outcomes, marks=(started, decoded_at, fresh_at, scored_at))
        self._hold_back()

    def _time_this(self) -> bool:
        """Whether this batch's arms get matched-size timed calls: one batch in
        ``spec.rollout.time_every`` (`RolloutSpec`)."""
        self._routed += 1
        return self._routed % self.spec.rollout.time_every == 1 % self.spec.rollout.time_every

    def _current_routing(self) -> Routing:
        """The follower's routing (or the fixed one); on a new baseline, the decoder and
        monitors follow it."""
        if self.follower is None:
            return self._routing
        routing = self.follower.current
        if routing is not self._routing:
            if routing.baseline is not self._routing.baseline:
                self._decoder = self._make_decoder(routing.baseline)
                self.service = routing.baseline
                if self.monitors is not None:
                    self.monitors.follow(routing.baseline)
            self._routing = routing
            if self.metrics is not None:
                model = routing.baseline.release.partition(":")[0]
                self.metrics.observe_routing(model, weight=routing.weight)
        return routing

    def _make_decoder(self, service: InferenceService) -> EventDecoder:
        spec = self.spec
        return EventDecoder(
            service.schema,
            id_field=spec.id_field,
            time_field=spec.event_time_field,
            max_event_bytes=spec.limits.max_event_bytes,
        )

    def _keys(self, fresh: DecodedEvents, routing: Routing) -> Sequence[str]:
        """Each fresh event's routing key: the plan's key field, else its id."""
        if routing.plan is None or routing.candidate is None:
            return ()
        name = routing.plan.key_field
        if name is None or name == self.spec.id_field:
            return fresh.ids
        if fresh.columns is not None and name in fresh.columns:
            return [str(v) for v in fresh.columns[name].tolist()]
        if fresh.records:
            return [str(r.get(name, "")) if isinstance(r, Mapping) else "" for r in fresh.records]
        return fresh.ids

    def _score_part(self, part: Part) -> tuple[InferenceResult, DecodedEvents, float]:
        """Score one part; also return its model latency in milliseconds."""
        started = time.perf_counter()
        result, events = self._score(part.events, part.service)
        return result, events, (time.perf_counter() - started) * 1000.0

    def _record_evidence(
        self,
        routing: Routing,
        parts: list[Part],
        scored: list[tuple[InferenceResult, DecodedEvents, float]],
    ) -> None:
        """What each arm showed in this batch, handed to the rollout participant."""
        if self.participant is None or routing.plan is None or routing.rollout_id is None:
            return
        evidence = StepEvidence()
        edges = routing.plan.score_edges
        timed: dict[str, InferenceResult] = {}
        for part, (result, events, latency_ms) in zip(parts, scored, strict=True):
            arm = evidence.candidate if part.arm == "candidate" else evidence.baseline
            arm.events += len(part.events.candidates)
            arm.errors += sum(1 for r in result.rejections if r.stage in _MODEL_STAGES)
            arm.errors += sum(1 for f in events.failures if f[1] == "output")
            if part.timed:
                arm.record_calls([latency_ms])
                timed[part.arm or "baseline"] = result
            if result.scores is not None and edges:
                arm.record_scores(result.scores, edges=edges)
        if routing.shadow and len(timed) == 2:
            _record_pairs(evidence, timed["baseline"], timed["candidate"])
        self.participant.record(routing.rollout_id, routing.step, evidence)
        if self.metrics is not None:
            arms = {"baseline": evidence.baseline, "candidate": evidence.candidate}
            self.metrics.observe_arms(
                routing.plan.name,
                events={arm: e.events for arm, e in arms.items()},
                errors={arm: e.errors for arm, e in arms.items()},
            )

    def _hold_back(self) -> None:
        """At the in-flight bound, stop fetching until every sink caught up (settled)."""
        if len(self._in_flight) >= self.spec.batch.max_in_flight:
            self.source.pause()
            try:
                self.settle()
            finally:
                self.source.resume()

    def _postprocess(
        self,
        messages: Sequence[Message],
        *,
        decoded: DecodedEvents,
        scored: DecodedEvents,
        result: InferenceResult,
        service: InferenceService,
        deduplicated: int,
        stamps_ns: tuple[int, int, int],
    ) -> BatchOutcome:
        """The batch's outcome: an output record per scored row, a dead letter per
        failure (the model's rejections and unencodable outputs included).

        `decoded` is the whole batch as decoded (its columns indexed by message, as the
        monitors read them); `scored` the events handed to the inference core.
        """
        candidates, event_ids = scored.candidates, scored.ids
        failures = scored.failures
        for rejection in result.rejections:
            failures.append(
                (candidates[rejection.row], rejection.stage, rejection.reason, rejection.field)
            )
        rows = result.rows.tolist()
        row_messages = [messages[candidates[r]] for r in rows]
        row_ids = [event_ids[r] for r in rows]
        if self.spec.event_time_field is None:
            times = [m.timestamp_ms for m in row_messages]
        else:
            event_times = scored.times_ms
            times = [
                t if (t := event_times[r]) is not None else row_messages[j].timestamp_ms
                for j, r in enumerate(rows)
            ]
        now_ms = int(time.time() * 1000)
        outputs = self._outputs(
            result, rows, row_messages, row_ids, times, failures, candidates, now_ms
        )
        spec = self.spec
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
        columns, records = decoded.columns, scored.records
        if self.monitors is not None and scored.coerce_strings:
            # Monitors read typed values, never CSV text.
            columns, records = self._typed_columns(decoded, len(messages), service), []
        return BatchOutcome(
            messages=messages,
            candidates=candidates,
            event_ids=event_ids,
            records=records,
            columns=columns,
            result=result,
            scored=rows,
            scored_ids=row_ids,
            event_times_ms=times,
            failures=failures,
            outputs=outputs,
            dead=dead,
            deduplicated=deduplicated,
            stamps_ns=stamps_ns,
            at_ms=now_ms,
        )

    def _account(
        self, outcomes: list[BatchOutcome], *, marks: tuple[float, float, float, float]
    ) -> None:
        """Count the batch (one outcome per part it was scored in) in the stats and the
        metrics; `marks` are the perf_counter readings at its start, after decoding, after
        dedupe and after scoring."""
        started = marks[0]
        first = outcomes[0]
        n = len(first.messages)
        failures = [f for o in outcomes for f in o.failures]
        n_outputs = sum(len(o.outputs) for o in outcomes)
        stats = self.stats
        stats.batches += 1
        stats.events += n
        stats.outputs += n_outputs
        stats.dead_letters += sum(len(o.dead) for o in outcomes)
        stats.deduplicated += first.deduplicated
        for _, stage, error, _ in failures:
            stats.dead_letter_reasons[f"{stage}: {_reason_class(error)}"] += 1
        done = time.perf_counter()
        stats.busy_s += done - started
        stats.batch_latency_ms.add(np.full(n, (done - started) * 1000.0))
        stamped = [t for o in outcomes for t in o.event_times_ms if t is not None]
        latencies = first.at_ms - np.asarray(stamped, dtype=np.float64) if stamped else None
        if latencies is not None:
            stats.end_to_end_ms.add(latencies)
        if self.metrics is not None:
            self.metrics.observe_batch(
                first.result.release,
                events=n,
                outputs=n_outputs,
                deduplicated=first.deduplicated,
                dead_letter_stages=[stage for _, stage, _, _ in failures],
                end_to_end_ms=latencies,
                marks=(*marks, done),
            )

    def _outputs(
        self,
        result: InferenceResult,
        scored: list[int],
        messages: list[Message],
        ids: list[str],
        times: list[int | None],
        failures: list[Failure],
        candidates: list[int],
        now_ms: int,
    ) -> list[OutRecord]:
        """The output records; a prediction that cannot be encoded is a dead letter
        (stage ``output``) instead of an exception out of the worker (monitors still see
        it among the scored rows: the model did score it)."""
        predictions = result.predictions.tolist()
        scores = None if result.scores is None else result.scores.tolist()
        probabilities = None
        if self.spec.probabilities and result.probabilities is not None and result.classes:
            classes = result.classes
            probabilities = [
                dict(zip(classes, row, strict=True)) for row in result.probabilities.tolist()
            ]

        def build(rows: list[int]) -> list[OutRecord]:
            return output_records(
                [messages[j] for j in rows],
                event_ids=[ids[j] for j in rows],
                predictions=[predictions[j] for j in rows],
                scores=None if scores is None else [scores[j] for j in rows],
                event_times_ms=[times[j] for j in rows],
                release=result.release,
                release_digest=result.release_digest,
                processed_at_ms=now_ms,
                probabilities=None if probabilities is None else [probabilities[j] for j in rows],
            )

        try:  # the whole batch as it is: no copies on the hot path
            return output_records(
                messages,
                event_ids=ids,
                predictions=predictions,
                scores=scores,
                event_times_ms=times,
                release=result.release,
                release_digest=result.release_digest,
                processed_at_ms=now_ms,
                probabilities=probabilities,
            )
        except Exception:
            outputs: list[OutRecord] = []
            for j in range(len(scored)):  # find the rows at fault, one by one
                try:
                    outputs.extend(build([j]))
                except Exception as exc:
                    reason = f"Cannot encode the output of this event ({type(exc).__name__})"
                    failures.append((candidates[scored[j]], "output", reason, None))
            return outputs

    def _typed_columns(
        self, decoded: DecodedEvents, n_messages: int, service: InferenceService
    ) -> Columns:
        """The schema fields of CSV-like rows parsed by their types, indexed by message
        (NaN or None where a row did not validate), for the monitors."""
        schema = service.schema
        text = decoded.columns
        if text is None:
            text = records_to_columns(decoded.records, names=schema.names)
        checked = validate(schema, text, n_rows=len(decoded.candidates), coerce_strings=True)
        at = np.asarray(decoded.candidates, dtype=np.intp)[checked.rows]
        typed: dict[str, Array] = {}
        for name, column in checked.columns.items():
            if column.dtype.kind in "biuf":
                full: Array = np.full(n_messages, np.nan)
            else:
                full = np.full(n_messages, None, dtype=object)
            full[at] = column
            typed[name] = full
        return typed

    def _drop_repeats(self, decoded: DecodedEvents) -> DecodedEvents:
        """`decoded` without the events emitted before (or earlier in the batch)."""
        keep = self._fresh(decoded.ids)
        return decoded if keep is None else subset_events(decoded, keep)

    @staticmethod
    def _infer(decoded: DecodedEvents, service: InferenceService) -> InferenceResult:
        n = len(decoded.candidates)
        if decoded.columns is not None:
            return service.infer(decoded.columns, n_rows=n, coerce_strings=decoded.coerce_strings)
        if decoded.coerce_strings:
            columns = records_to_columns(decoded.records, names=service.schema.names)
            return service.infer(columns, n_rows=n, coerce_strings=True)
        return service.infer_records(decoded.records)

    def _score(
        self, decoded: DecodedEvents, service: InferenceService
    ) -> tuple[InferenceResult, DecodedEvents]:
        """Validate and predict; an event whose validation raises becomes a dead letter.

        The inference core rejects bad rows with reasons and isolates a model failure to
        its rows; anything else one event makes it raise is found here by scoring the
        batch's events one by one, and the batch is scored again without them.
        """
        try:
            return self._infer(decoded, service), decoded
        except Exception:
            if not decoded.candidates:
                raise  # no event to blame: the core itself is broken
        keep: list[int] = []
        failures = decoded.failures
        for j in range(len(decoded.candidates)):
            try:
                self._infer(subset_events(decoded, [j]), service)
            except Exception as exc:
                failures.append((decoded.candidates[j], "validate", _unexpected(exc), None))
            else:
                keep.append(j)
        rest = subset_events(decoded, keep)
        rest.failures = failures
        return self._infer(rest, service), rest

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

    def _send(
        self, outputs: list[OutRecord], dead: list[OutRecord], shadow: list[OutRecord]
    ) -> None:
        """Hand records to the sinks; acknowledgements are awaited by `settle`."""
        if outputs:
            for sink in self.outputs:
                sink.send(outputs)
                self._in_flight.sent_to(sink)
        if dead:
            self.dead_letter.send(dead)
            self._in_flight.sent_to(self.dead_letter)
        if shadow and self.shadow_sink is not None:
            self.shadow_sink.send(shadow)
            self._in_flight.sent_to(self.shadow_sink)

    def settle(self) -> None:
        """Wait for every sink's acknowledgement, record the ids, commit the offsets
        (`Checkpoint.commit`), then tell the metrics and monitors.

        Raises `SinkError` when a sink cannot acknowledge: nothing is committed and a
        restart redelivers.
        """
        started = time.perf_counter()
        if not self._in_flight.commit(source=self.source, dedupe=self.dedupe):
            return
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
                f"'{redact_url(self.source.url)}' streams forever. Stop the worker with "
                "SIGTERM instead."
            )
        wait_s = spec.batch.max_wait_ms / 1000.0
        idle_wait = max(wait_s, 0.1)
        settle_s = spec.batch.settle_ms / 1000.0
        self.stats = WorkerStats()
        self._in_flight.clear()
        next_stats = time.monotonic() + spec.stats_interval_s
        for sink in self._sinks():
            sink.open()
        self.source.open(on_revoke=self._on_revoke)
        try:
            if self.monitors is not None:
                self.monitors.open()
            if self.follower is not None:
                self.follower.start()
            if self.participant is not None:
                self.participant.start()
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

    def _sinks(self) -> list[Sink]:
        extra = [self.shadow_sink] if self.shadow_sink is not None else []
        return [*self.outputs, self.dead_letter, *extra]

    def _close(self) -> None:
        errors: list[BaseException] = []
        if self.follower is not None:
            self.follower.stop()
        if self.participant is not None:
            self.participant.stop()
        for closer in [*(s.close for s in self._sinks()), self.source.close]:
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


def _first_kind_change(messages: Sequence[Message]) -> tuple[int | None, bool]:
    """Where the batch's first run of one kind (CSV-like row or JSON event) ends, or
    None when it is all one kind; and whether that first run is CSV-like rows."""
    names = {name for m in messages for name, _ in m.headers}
    if names.isdisjoint(TEXT_ROW_HEADERS):  # only the file and Redis sources send rows
        return None, False
    kinds = [event_kind(m) for m in messages]
    cut = next((j for j in range(1, len(kinds)) if kinds[j] != kinds[0]), None)
    return cut, kinds[0] == "csv"


def _unexpected(exc: BaseException) -> str:
    """A reason for an exception the inference core should not have raised for an event:
    its type only, since its message may quote the event's values."""
    return f"Unexpected {type(exc).__name__} while validating this event"


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
    if head.startswith("Malformed row"):  # the rest names the producer's fields
        return "malformed row"
    if head.startswith("Value"):
        if " above " in head or " below " in head:
            return "out of range" + location
        return "value not allowed" + location
    return head[:80] + location


_MODEL_STAGES = frozenset({"predict", "output"})
"""Stages at which a row fails because of the model (not of its input)."""


def _mark_routed(outcomes: list[BatchOutcome], *, n_messages: int) -> None:
    """Tell each outcome of a routed batch which messages it speaks for: its rows, and
    for the first one the rest (decode failures, repeats), so a monitor sees each
    message once."""
    claimed: set[int] = set()
    for outcome in outcomes[1:]:
        rows = frozenset(outcome.candidates)
        outcome.routed = rows
        claimed |= rows
    outcomes[0].routed = frozenset(i for i in range(n_messages) if i not in claimed)


def _record_pairs(
    evidence: StepEvidence, baseline: InferenceResult, candidate: InferenceResult
) -> None:
    """Count shadowed pairs: rows of the same events both releases predicted."""
    common, b_at, c_at = np.intersect1d(
        baseline.rows, candidate.rows, assume_unique=True, return_indices=True
    )
    if not len(common):
        return
    evidence.pairs.record(
        baseline_predictions=np.asarray(baseline.predictions)[b_at],
        candidate_predictions=np.asarray(candidate.predictions)[c_at],
        baseline_scores=None if baseline.scores is None else baseline.scores[b_at],
        candidate_scores=None if candidate.scores is None else candidate.scores[c_at],
    )
