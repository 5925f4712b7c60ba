"""The worker's monitors, built from a pipeline spec: traces, payload samples, live
accuracy and drift, fed per batch.

`build_monitors` builds the parts a spec asks for; `Monitors` holds them and passes each
`Observer` hook on to them in order (the parts live in `headrace.pipeline.monitors`). The
worker hands each batch over as a `BatchOutcome` (after scoring, before sending, so
trace headers can still be set on the records) and tells it when it settled. Everything
here works per batch and touches single events only for the few it samples; with every
monitor on at its default share, a worker loses a few percent of its throughput (see
benchmarks/README.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headrace.errors import ConfigError
from headrace.inference.service import InferenceService
from headrace.monitoring.accuracy import AccuracyMonitor
from headrace.monitoring.samples import ParquetSampleSink, PayloadSampler, PiiMasker
from headrace.monitoring.tracing import EventTracer
from headrace.monitoring.tracing import tracer_provider as make_tracer_provider
from headrace.pipeline.feedback import FeedbackReader
from headrace.pipeline.monitors import (
    AccuracyObserver,
    DeadLetterScrubber,
    Observer,
    SamplesObserver,
    TracingObserver,
)
from headrace.pipeline.outcome import BatchOutcome
from headrace.pipeline.spec import PipelineSpec
from headrace.release.config import ReleaseConfig
from headrace.streams.urls import open_source

if TYPE_CHECKING:
    from headrace.monitoring.metrics import WorkerMetrics
    from headrace.pipeline.drift import DriftWatch
    from headrace.registry.store import Registry

__all__ = ["Monitors", "build_monitors", "positive_class"]

log = logging.getLogger("headrace.pipeline")


@dataclass(slots=True)
class Monitors:
    """The monitors of one worker, each part optional, fed as observers in order: the
    scrubber (so the rest read masked reasons), accuracy, samples, traces, drift.

    The worker calls `open` before its loop, `on_batch` per batch, `on_settle` after
    each settle and `close` when it stops (the `Observer` hooks, passed on to each
    part). The parts stay readable by name (`accuracy`, `feedback`, `drift`, ...).
    """

    pipeline: str
    tracer: EventTracer | None = None
    sampler: PayloadSampler | None = None
    accuracy: AccuracyMonitor | None = None
    feedback: FeedbackReader | None = None
    scrubber: PiiMasker | None = None
    drift: DriftWatch | None = None
    owned_provider: Any = None
    watch_for: Callable[[InferenceService], DriftWatch] | None = None
    observers: list[Observer] = field(init=False)
    _next_drift: DriftWatch | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        scrub = DeadLetterScrubber(self.scrubber) if self.scrubber is not None else None
        parts: list[Observer | None] = [
            scrub,
            AccuracyObserver(self.accuracy, self.feedback) if self.accuracy is not None else None,
            SamplesObserver(self.sampler) if self.sampler is not None else None,
            TracingObserver(self.tracer, scrubber=scrub, owned_provider=self.owned_provider)
            if self.tracer is not None
            else None,
            self.drift,
        ]
        self.observers = [part for part in parts if part is not None]

    def open(self) -> None:
        """Start each part's background work (samples writer, feedback reader, alarm
        sink)."""
        for observer in self.observers:
            observer.open()

    def follow(self, service: InferenceService) -> None:
        """The worker switched to `service`'s release: build its drift watch (reference,
        calibration) in a thread, and swap it in at a later batch once ready; meanwhile
        the old watch skips the new release's rows rather than test them against the
        wrong reference."""
        watch_for, current = self.watch_for, self.drift
        if watch_for is None or current is None or current.release == service.release:
            return

        def build() -> None:
            try:
                self._next_drift = watch_for(service)
            except Exception as exc:  # drift is a monitor: scoring goes on without it
                log.warning("%s: cannot watch drift of %s: %s", self.pipeline, service.release, exc)

        threading.Thread(target=build, name="headrace-drift-follow", daemon=True).start()

    def _swap_drift(self, new: DriftWatch) -> None:
        old = self.drift
        self._next_drift = None
        new.open()
        self.observers = [new if part is old else part for part in self.observers]
        self.drift = new
        if old is not None:
            try:
                old.close()
            except Exception as exc:
                log.warning("%s: error while closing a drift watch: %s", self.pipeline, exc)
        log.info("%s: drift now watches %s", self.pipeline, new.release)

    def on_batch(self, outcome: BatchOutcome) -> None:
        """Hand one batch to each part, in order."""
        ready = self._next_drift
        if ready is not None:
            self._swap_drift(ready)
        for observer in self.observers:
            observer.on_batch(outcome)

    def on_settle(self, start_ns: int) -> None:
        """Tell each part the batches seen so far were settled."""
        for observer in self.observers:
            observer.on_settle(start_ns)

    def close(self) -> None:
        """Close every part (unsettled spans end as failed, the feedback reader stops,
        the samples are flushed), logging the first failure."""
        errors: list[BaseException] = []
        for observer in self.observers:
            try:
                observer.close()
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


def _drift_watches(
    spec: PipelineSpec,
    home: Path,
    registry: Registry | None,
    metrics: WorkerMetrics | None,
) -> Callable[[InferenceService], DriftWatch]:
    """Builds the drift watch of a release (the first one, and each release the worker
    switches to), all reporting to one set of drift series."""
    from headrace.monitoring.metrics import DriftMetrics
    from headrace.pipeline.drift import build_drift_watch

    if registry is None or spec.drift is None:
        raise ConfigError(f"{spec.name}: drift needs the registry of the release it watches")
    drift, found = spec.drift, registry
    series = None if metrics is None else DriftMetrics(metrics.registry, pipeline=spec.name)

    def watch(service: InferenceService) -> DriftWatch:
        return build_drift_watch(
            drift, pipeline=spec.name, service=service, registry=found, home=home, metrics=series
        )

    return watch


def build_monitors(
    spec: PipelineSpec,
    *,
    service: InferenceService,
    home: Path,
    tracer_provider: Any = None,
    registry: Registry | None = None,
    metrics: WorkerMetrics | None = None,
    otlp_endpoint: str | None = None,
    sample_key: str | None = None,
) -> Monitors | None:
    """The monitors a spec asks for; None when it asks for none and no field is ``pii``
    (with one, dead letters of model failures get their ``error`` scrubbed here).

    `registry` is needed by ``drift`` (the reference, the audit log, the release tag);
    `metrics` gets its drift series registered beside it. The environment is read by the
    caller (the edge), never here.

    Parameters
    ----------
    otlp_endpoint
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): when
        set and no `tracer_provider` is given, the monitors build and own a provider that
        exports spans over OTLP (its exporter reads the standard variables itself).
    sample_key
        The secret for ``samples.pii: hash``, from the variable ``samples.key_env`` names;
        required then (`ConfigError` naming that variable without it), ignored otherwise.
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
    watch_for = _drift_watches(spec, home, registry, metrics) if drift is not None else None
    watch = watch_for(service) if watch_for is not None else None
    tracer: EventTracer | None = None
    owned_provider: Any = None
    if spec.tracing is not None:
        if tracer_provider is None and otlp_endpoint:
            tracer_provider = owned_provider = make_tracer_provider(spec.name)
        tracer = EventTracer(
            pipeline=spec.name,
            sample_ratio=spec.tracing.sample_ratio,
            provider=tracer_provider,
        )
    sampler: PayloadSampler | None = None
    samples = spec.samples
    if samples is not None:
        key: bytes | None = None
        if samples.pii == "hash":
            if not sample_key:
                raise ConfigError(
                    f"{spec.name}: samples.pii is 'hash' but the environment variable "
                    f"{samples.key_env} (samples.key_env) holding the key is not set: set it "
                    "to a secret (e.g. `openssl rand -hex 32`) or use pii: redact"
                )
            key = sample_key.encode()
        directory = (
            Path(samples.url.removeprefix("file://"))
            if samples.url
            else home / "samples" / spec.name
        )
        sampler = PayloadSampler(
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

            SampleMetrics(metrics.registry, pipeline=spec.name, sampler=sampler)
    accuracy: AccuracyMonitor | None = None
    reader: FeedbackReader | None = None
    feedback = spec.feedback
    if feedback is not None:
        positive, classes = positive_class(service.config)
        accuracy = AccuracyMonitor(
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
        reader = FeedbackReader(
            source,
            monitor=accuracy,
            id_field=feedback.id_field,
            label_field=feedback.label_field,
            pipeline=spec.name,
        )
    return Monitors(
        pipeline=spec.name,
        tracer=tracer,
        sampler=sampler,
        accuracy=accuracy,
        feedback=reader,
        scrubber=PiiMasker(schema, mode="redact") if has_pii else None,
        drift=watch,
        owned_provider=owned_provider,
        watch_for=watch_for,
    )


# Labels are not latency-sensitive: a Kafka feedback consumer that asks the broker for new
# records every 500 ms (librdkafka's default) instead of the scoring source's 50 ms costs
# the broker, which may share the worker's cores, a tenth of the fetches.
_KAFKA_FEEDBACK_DEFAULTS = {"fetch.wait.max.ms": 500, "queued.min.messages": 1000}


def _feedback_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """The feedback source's client options: the user's, over lighter Kafka defaults."""
    if url.startswith("kafka://"):
        return {**_KAFKA_FEEDBACK_DEFAULTS, **options}
    return options
