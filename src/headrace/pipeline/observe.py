"""The worker's monitors: traces, payload samples, live accuracy and drift, fed per batch.

The worker hands each batch to `Monitors.on_batch` as a `BatchOutcome` (after scoring,
before sending, so trace headers can still be set on the records) and tells it when it
settled. Everything here works per batch and touches single events only for the few it
samples; with every monitor on at its default share, a worker loses a few percent of its
throughput (see benchmarks/README.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from headrace.errors import ConfigError
from headrace.inference.service import InferenceService
from headrace.monitoring.accuracy import AccuracyMonitor
from headrace.monitoring.samples import ParquetSampleSink, PayloadSampler, PiiMasker
from headrace.monitoring.tracing import EventTracer
from headrace.monitoring.tracing import tracer_provider as make_tracer_provider
from headrace.pipeline.feedback import FeedbackReader
from headrace.pipeline.outcome import BatchOutcome
from headrace.pipeline.spec import PipelineSpec
from headrace.release.config import ReleaseConfig
from headrace.streams.urls import open_source

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from headrace.monitoring.metrics import WorkerMetrics
    from headrace.pipeline.drift import DriftWatch
    from headrace.registry.store import Registry

__all__ = ["Monitors", "build_monitors", "positive_class"]

log = logging.getLogger("headrace.pipeline")

# The stages an event passes, in order, up to the one it failed at (deduplication, a
# set lookup, gets no span of its own: a span costs more than the stage).
_STAGES = ("decode", "validate", "predict", "postprocess")
_REACHED = {"decode": 1, "validate": 2, "predict": 3}


@dataclass(slots=True)
class _Traced:
    span: Span
    view: BatchOutcome
    send_from_ns: int


@dataclass(slots=True)
class Monitors:
    """Traces, samples and live accuracy for one worker; each part optional.

    The worker calls `open` before its loop, `on_batch` per batch, `on_settle` after
    each settle and `close` when it stops.
    """

    pipeline: str
    tracer: EventTracer | None = None
    sampler: PayloadSampler | None = None
    accuracy: AccuracyMonitor | None = None
    feedback: FeedbackReader | None = None
    scrubber: PiiMasker | None = None
    drift: DriftWatch | None = None
    owned_provider: Any = None
    _pending: list[_Traced] = field(default_factory=list)

    def open(self) -> None:
        """Start the samples writer and the feedback reader."""
        if self.sampler is not None:
            self.sampler.start()
        if self.feedback is not None:
            self.feedback.start()
        if self.drift is not None:
            self.drift.open()

    def on_batch(self, view: BatchOutcome) -> None:
        """Keep predictions, sample rows and start trace spans for one batch."""
        if self.scrubber is not None and view.failures:
            self._scrub_dead_letters(view)
        result = view.result
        predictions: list[Any] | None = None
        scores: list[float] | None = None
        if (self.accuracy is not None or self.sampler is not None) and view.scored:
            predictions = result.predictions.tolist()
            scores = None if result.scores is None else result.scores.tolist()
        if self.accuracy is not None and predictions is not None:
            self.accuracy.add_predictions(
                view.scored_ids, predictions, scores, release=result.release
            )
        if self.sampler is not None:
            self._sample(view, predictions or [], scores)
        if self.tracer is not None:
            self._trace(self.tracer, view)
        if self.drift is not None:
            self.drift.on_batch(view)

    def _sample(
        self, view: BatchOutcome, predictions: list[Any], scores: list[float] | None
    ) -> None:
        sampler = self.sampler
        if sampler is None:
            return
        release = view.result.release
        for j in sampler.choose(len(view.scored)):
            row = view.scored[j]
            message = view.messages[view.candidates[row]]
            sampler.add(
                event_id=view.scored_ids[j],
                release=release,
                at_ms=view.at_ms,
                source=message.position,
                features=view.features(row),
                prediction=predictions[j],
                score=None if scores is None else scores[j],
            )
        if not view.failures:
            return
        row_of = {index: row for row, index in enumerate(view.candidates)}
        for index, stage, error, _field in view.failures:
            failed_row = row_of.get(index)
            if failed_row is not None:
                event_id: str | None = view.event_ids[failed_row]
                features: Mapping[str, Any] | None = view.features(failed_row)
            else:  # failed before it had a row (undecodable, too large, no id)
                event_id, features = None, view.features_of(index) or None
            sampler.add(
                event_id=event_id,
                release=release,
                at_ms=view.at_ms,
                source=view.messages[index].position,
                features=features,
                stage=stage,
                error=error,
            )

    def _trace(self, tracer: EventTracer, view: BatchOutcome) -> None:
        failed = {index: k for k, (index, *_rest) in enumerate(view.failures)}
        traced = tracer.select(view.messages, always=failed)
        if not traced:
            return
        # outputs are in row order, rows in message order: find a message's output by bisection
        output_messages = np.asarray(view.candidates, dtype=np.intp)[
            np.asarray(view.scored, dtype=np.intp)
        ]
        begun, decoded, deduped = view.stamps_ns
        stages = view.result.stages_ns
        ends = [decoded, *stages[1:]]
        starts = [begun, stages[0] if stages else deduped, *stages[1:]]
        for index in traced:
            message = view.messages[index]
            j = int(np.searchsorted(output_messages, index))
            output = j if j < len(output_messages) and output_messages[j] == index else None
            k = failed.get(index)
            attributes: dict[str, str | int] = {
                "messaging.destination.name": message.topic,
                "messaging.destination.partition.id": str(message.partition),
                "headrace.source": message.position,
                "headrace.release": view.result.release,
                "headrace.outcome": "output"
                if output is not None
                else "dead_letter"
                if k is not None
                else "duplicate",
            }
            if output is not None:
                attributes["messaging.message.id"] = view.scored_ids[output]
            span = tracer.begin(
                message.headers, start_ns=begun, attributes=attributes, force=k is not None
            )
            error: str | None = None
            failed_stage: str | None = None
            if output is not None:
                reached = len(_STAGES)
            elif k is not None:
                _, failed_stage, error, field_name = view.failures[k]
                error = self._scrub(view, index, error)
                reached = _REACHED.get(failed_stage, 2)
                tracer.fail(span, stage=failed_stage, error=error, field=field_name)
            else:
                reached = 1  # a repeat: dropped by the dedupe stage
            reached = min(reached, len(ends))
            tracer.stages(
                span,
                [
                    (name, starts[s], ends[s], error if name == failed_stage else None)
                    for s, name in enumerate(_STAGES[:reached])
                ],
            )
            last = ends[reached - 1]
            if output is not None:
                record = view.outputs[output]
                record.headers = tracer.inject(span, record.headers)
            elif k is not None:
                record = view.dead[k]
                record.headers = tracer.inject(span, record.headers)
            else:
                tracer.end(span, end_ns=deduped)
                continue
            self._pending.append(_Traced(span, view, last))

    def _scrub_dead_letters(self, view: BatchOutcome) -> None:
        """Mask ``pii`` values a model quoted in its exception (validation reasons never
        show them) in the dead letters' ``error`` before they are sent."""
        for k, (index, stage, error, field_name) in enumerate(view.failures):
            if stage != "predict":
                continue
            scrubbed = self._scrub(view, index, error)
            if scrubbed == error:
                continue
            view.failures[k] = (index, stage, scrubbed, field_name)
            record = view.dead[k]
            letter = orjson.loads(record.value)
            letter["error"] = scrubbed
            record.value = orjson.dumps(letter)

    def _scrub(self, view: BatchOutcome, index: int, error: str) -> str:
        if self.scrubber is None or not self.scrubber.fields:
            return error
        try:
            row = view.candidates.index(index)
        except ValueError:
            return error
        return self.scrubber.scrub(error, view.features(row))

    def on_settle(self, start_ns: int) -> None:
        """End the spans of the events just settled (sent, acknowledged, committed)."""
        if not self._pending or self.tracer is None:
            return
        tracer = self.tracer
        end_ns = time.time_ns()
        for traced in self._pending:
            sent = traced.view.sent_ns or traced.send_from_ns
            tracer.stages(
                traced.span,
                [("send", traced.send_from_ns, sent, None), ("settle", start_ns, end_ns, None)],
            )
            tracer.end(traced.span, end_ns=end_ns)
        self._pending = []

    def close(self) -> None:
        """End unsettled spans as failed, stop the feedback reader, flush the samples."""
        if self.tracer is not None:
            now = time.time_ns()
            for traced in self._pending:
                self.tracer.fail(
                    traced.span,
                    stage="settle",
                    error="not settled: the worker stopped first (the event comes again)",
                    field=None,
                )
                self.tracer.end(traced.span, end_ns=now)
            self._pending = []
        if self.owned_provider is not None:
            self.owned_provider.shutdown()  # exports what is batched
        errors: list[BaseException] = []
        for part in (self.feedback, self.sampler, self.drift):
            if part is None:
                continue
            try:
                part.close()
            except Exception as exc:  # close every part, report the first failure
                errors.append(exc)
        if errors:
            log.warning("%s: error while closing monitors: %s", self.pipeline, errors[0])


def positive_class(config: ReleaseConfig) -> tuple[Any, list[Any] | None]:
    """The prediction value meaning "positive" and the class values, from the config.

    With `labels`, predictions are labels: the positive one is `positive_class` (a
    label, or a class index) or the last label. Without, they are the model's classes,
    taken as 0/1 unless `positive_class` names another class.
    """
    wanted = config.positive_class
    labels = config.labels
    if labels:
        if wanted in labels:
            return wanted, list(labels)
        if isinstance(wanted, int) and 0 <= wanted < len(labels):
            return labels[wanted], list(labels)
        return labels[-1], list(labels)
    if wanted is None or wanted in (0, 1):
        return (1 if wanted is None else wanted), [0, 1]
    return wanted, None


def _drift_watch(
    spec: PipelineSpec,
    service: InferenceService,
    home: Path,
    registry: Registry | None,
    metrics: WorkerMetrics | None,
) -> DriftWatch:
    from headrace.monitoring.metrics import DriftMetrics
    from headrace.pipeline.drift import build_drift_watch

    if registry is None or spec.drift is None:
        raise ConfigError(f"{spec.name}: drift needs the registry of the release it watches")
    return build_drift_watch(
        spec.drift,
        pipeline=spec.name,
        service=service,
        registry=registry,
        home=home,
        metrics=None if metrics is None else DriftMetrics(metrics.registry, pipeline=spec.name),
    )


def build_monitors(
    spec: PipelineSpec,
    *,
    service: InferenceService,
    home: Path,
    tracer_provider: Any = None,
    registry: Registry | None = None,
    metrics: WorkerMetrics | None = None,
) -> Monitors | None:
    """The monitors a spec asks for; None when it asks for none and no field is ``pii``
    (with one, dead letters of model failures get their ``error`` scrubbed here).

    `registry` is needed by ``drift`` (the reference, the audit log, the release tag);
    `metrics` gets its drift series registered beside it.
    """
    schema = service.schema
    has_pii = any(f.pii for f in schema.fields)
    drift = spec.drift if spec.drift is not None and spec.drift.enabled else None
    if (
        spec.tracing is None
        and spec.samples is None
        and spec.feedback is None
        and drift is None
        and not has_pii
    ):
        return None
    monitors = Monitors(pipeline=spec.name)
    if drift is not None:
        monitors.drift = _drift_watch(spec, service, home, registry, metrics)
    if has_pii:
        monitors.scrubber = PiiMasker(schema, mode="redact")
    if spec.tracing is not None:
        if tracer_provider is None and (
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        ):
            tracer_provider = monitors.owned_provider = make_tracer_provider(spec.name)
        monitors.tracer = EventTracer(
            pipeline=spec.name,
            sample_ratio=spec.tracing.sample_ratio,
            provider=tracer_provider,
        )
    samples = spec.samples
    if samples is not None:
        key: bytes | None = None
        if samples.pii == "hash":
            secret = os.environ.get(samples.key_env, "")
            if not secret:
                raise ConfigError(
                    f"{spec.name}: samples.pii is 'hash' but the environment variable "
                    f"{samples.key_env} (samples.key_env) holding the key is not set: set it "
                    "to a secret (e.g. `openssl rand -hex 32`) or use pii: redact"
                )
            key = secret.encode()
        directory = (
            Path(samples.url.removeprefix("file://"))
            if samples.url
            else home / "samples" / spec.name
        )
        monitors.sampler = PayloadSampler(
            schema,
            sink=ParquetSampleSink(
                directory,
                schema=schema,
                roll_bytes=int(samples.roll_mb * (1 << 20)),
                roll_s=samples.roll_s,
            ),
            ratio=samples.ratio,
            masker=PiiMasker(schema, mode="hash" if key else "redact", key=key),
            max_buffer=samples.max_buffer,
        )
        if metrics is not None:
            from headrace.monitoring.metrics import SampleMetrics

            SampleMetrics(metrics.registry, pipeline=spec.name, sampler=monitors.sampler)
    feedback = spec.feedback
    if feedback is not None:
        positive, classes = positive_class(service.config)
        monitors.accuracy = AccuracyMonitor(
            positive,
            classes=classes,
            max_pending=feedback.max_pending,
            ttl_s=feedback.ttl_s,
            window=feedback.window,
        )
        source = open_source(
            feedback.url,
            topic=feedback.topic,
            group=feedback.group or f"{spec.name}-feedback",
            options=_feedback_options(feedback.url, dict(feedback.options)),
        )
        monitors.feedback = FeedbackReader(
            source,
            monitor=monitors.accuracy,
            id_field=feedback.id_field,
            label_field=feedback.label_field,
            pipeline=spec.name,
        )
    return monitors


# Labels are not latency-sensitive: a Kafka feedback consumer that asks the broker for new
# records every 500 ms (librdkafka's default) instead of the scoring source's 50 ms costs
# the broker, which may share the worker's cores, a tenth of the fetches.
_KAFKA_FEEDBACK_DEFAULTS = {"fetch.wait.max.ms": 500, "queued.min.messages": 1000}


def _feedback_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """The feedback source's client options: the user's, over lighter Kafka defaults."""
    if url.startswith("kafka://"):
        return {**_KAFKA_FEEDBACK_DEFAULTS, **options}
    return options
