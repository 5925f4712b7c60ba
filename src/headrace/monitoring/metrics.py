"""The stream worker's Prometheus metrics, and the drift series the detectors report to.

Every series carries ``pipeline``, ``model`` (the release's name) and ``release`` (like
``fraud:3``) where it is about one release's work; in-flight events, settling and
consumer lag belong to the worker, not to a release, and carry ``pipeline`` only (lag
adds ``topic`` and ``partition``). No label ever holds an event id or a value:
dead letters are counted by stage (``decode``, ``validate``, ``predict``...), drift by
schema column, so the number of series is bounded by the pipeline's own shape.

The worker reports once per batch, never once per event, and cheaply: a batch adds a
few plain numbers under one lock (and keeps its array of end-to-end latencies); numpy
counts them into `BatchHistogram` buckets every 64 batches and before each scrape, so a
scrape is always exact (``benchmarks/worker_metrics.py``: about 20 us per 512-event batch).
Names and buckets line up with the server's (``headrace.serving.metrics``), so one
dashboard reads both.

=====================================================  =========  =========================
series                                                 type       extra labels
=====================================================  =========  =========================
``headrace_pipeline_events_in_total``                  counter
``headrace_pipeline_events_out_total``                 counter
``headrace_pipeline_dead_letters_total``               counter    ``stage``
``headrace_pipeline_deduplicated_total``               counter
``headrace_pipeline_batch_events``                     histogram
``headrace_pipeline_end_to_end_seconds``               histogram  (event time to output)
``headrace_pipeline_model_seconds``                    histogram  (validate, model, post)
``headrace_pipeline_stage_seconds``                    histogram  ``stage``
``headrace_pipeline_cpu_seconds_total``                counter    (process CPU, per release)
``headrace_pipeline_model_memory_bytes``               gauge
``headrace_pipeline_model_load_seconds``               gauge
``headrace_pipeline_settle_seconds``                   histogram  pipeline only
``headrace_pipeline_in_flight_events``                 gauge      pipeline only
``headrace_pipeline_consumer_lag_events``              gauge      ``topic``, ``partition``
``headrace_pipeline_rollout_events_total``              counter    ``arm`` (during rollouts)
``headrace_pipeline_rollout_errors_total``              counter    ``arm`` (model failures)
``headrace_pipeline_rollout_weight_percent``            gauge      candidate's traffic share
``headrace_drift_p_value``                             gauge      ``column``
``headrace_drift_alarms_total``                        counter    ``column``
``headrace_samples_written_total``                     counter    pipeline only
``headrace_samples_lost_total``                        counter    ``reason`` (dropped, failed)
=====================================================  =========  =========================
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from headrace.errors import ConfigError
from headrace.monitoring.histogram import BatchHistogram, BatchHistogramChild

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = [
    "BATCH_BUCKETS",
    "LATENCY_BUCKETS",
    "STAGES",
    "DriftMetrics",
    "MetricsServer",
    "SampleCounts",
    "SampleMetrics",
    "WorkerMetrics",
    "exposition",
    "new_registry",
    "serve_metrics",
    "source_lag",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Latency buckets in seconds, the server's own: 0.5 s is a bound, so the latency SLO
(events within 500 ms) reads straight off one bucket."""

BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
"""Events per batch, the server's rows-per-batch buckets."""

STAGES: tuple[str, ...] = ("decode", "dedupe", "send")
"""The ``stage`` values of ``headrace_pipeline_stage_seconds``; the model's own time is
``headrace_pipeline_model_seconds`` and settling is ``headrace_pipeline_settle_seconds``."""

Lags = dict[tuple[str, str], int]
"""Consumer lag by ``(topic, partition)``; partition ``"all"`` when only a total is known."""


def new_registry(*, process: bool = True) -> CollectorRegistry:
    """A fresh registry (the global default would mix workers started in one process).

    With `process`, it carries prometheus-client's process collector (CPU seconds,
    resident memory, open files) as ``process_*``.
    """
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry()
    if process:
        ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of `registry` and its content type (what ``/metrics`` sends)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), str(CONTENT_TYPE_LATEST)


_FOLD_EVERY = 64
"""Batches whose single values are kept as plain numbers before they are counted into
their buckets with one numpy call each (a scrape counts them at once, whatever their
number): at most 64 x 512 end-to-end latencies, 256 KB, wait."""


class _ReleaseSeries:
    """One release's counts, and its observations not yet counted into buckets.

    The worker adds plain numbers under one lock; numpy turns them into bucket counts
    every `_FOLD_EVERY` batches and before every scrape (`fold`).
    """

    __slots__ = (
        "batch_events",
        "cpu_seconds",
        "dead_letters",
        "deduplicated",
        "end_to_end",
        "events_in",
        "events_out",
        "histograms",
        "labels",
        "model_seconds",
        "pending",
        "stage_seconds",
    )

    def __init__(self, labels: tuple[str, str, str], histograms: list[BatchHistogramChild]) -> None:
        self.labels = labels
        self.histograms = histograms  # batch events, model, decode, dedupe, send, end to end
        self.events_in = 0
        self.events_out = 0
        self.deduplicated = 0
        self.cpu_seconds = 0.0
        self.dead_letters: Counter[str] = Counter()
        self.batch_events: list[float] = []
        self.model_seconds: list[float] = []
        self.stage_seconds: tuple[list[float], list[float], list[float]] = ([], [], [])
        self.end_to_end: list[npt.NDArray[np.float64]] = []
        self.pending = 0

    def fold(self) -> None:
        """Count the kept observations into their buckets (the caller holds the lock)."""
        if not self.pending:
            return
        batch, model, decode, dedupe, send, end_to_end = self.histograms
        for values, child in (
            (self.batch_events, batch),
            (self.model_seconds, model),
            (self.stage_seconds[0], decode),
            (self.stage_seconds[1], dedupe),
            (self.stage_seconds[2], send),
        ):
            child.observe_many(np.asarray(values, dtype=np.float64))
            values.clear()
        if self.end_to_end:
            end_to_end.observe_many(np.concatenate(self.end_to_end) * 0.001)
            self.end_to_end.clear()
        self.pending = 0


class WorkerMetrics:
    """What a stream worker reports to Prometheus; see the module docstring for the series.

    The worker calls `observe_batch` after each batch, `observe_settle` after each
    settle, `observe_lag` on its stats tick, and `watch_in_flight` once; `build_worker`
    calls `observe_load` with the model's measured load. A batch costs a few additions
    under one lock; the counts become Prometheus series when scraped.

    Parameters
    ----------
    registry
        Where the series are registered (`new_registry` makes one).
    pipeline
        The pipeline's name, the ``pipeline`` label of every series.
    """

    def __init__(self, registry: CollectorRegistry, *, pipeline: str) -> None:
        from prometheus_client import Gauge

        if not pipeline:
            raise ConfigError("WorkerMetrics needs the pipeline's name for the `pipeline` label")
        self.registry = registry
        self.pipeline = pipeline
        release_labels = ["pipeline", "model", "release"]
        # Rendered by `collect` after a fold, so never registered on their own.
        self.batch_events = BatchHistogram(
            "headrace_pipeline_batch_events",
            "Events per batch polled from the source.",
            release_labels,
            buckets=BATCH_BUCKETS,
            registry=None,
        )
        self.end_to_end = BatchHistogram(
            "headrace_pipeline_end_to_end_seconds",
            "From an event's time (its time field, else the broker timestamp) to its output.",
            release_labels,
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.model_seconds = BatchHistogram(
            "headrace_pipeline_model_seconds",
            "Time one batch spent in validation, the model and post-processing.",
            release_labels,
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.stage_seconds = BatchHistogram(
            "headrace_pipeline_stage_seconds",
            "Time one batch spent in a worker stage (decode, dedupe, send).",
            [*release_labels, "stage"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._lock = threading.Lock()
        self._series: dict[str, _ReleaseSeries] = {}
        self._cpu_mark = time.process_time()
        registry.register(self)
        self.settle_seconds = BatchHistogram(
            "headrace_pipeline_settle_seconds",
            "Time one settle took: every sink's acknowledgement, the ids, the commit.",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_memory = Gauge(
            "headrace_pipeline_model_memory_bytes",
            "Measured memory of the loaded model (RSS growth or object graph).",
            release_labels,
            registry=registry,
        )
        self.model_load = Gauge(
            "headrace_pipeline_model_load_seconds",
            "Time the release took to fetch, verify and load.",
            release_labels,
            registry=registry,
        )
        self.in_flight = Gauge(
            "headrace_pipeline_in_flight_events",
            "Events sent to the sinks but not yet settled (acknowledged and committed).",
            ["pipeline"],
            registry=registry,
        )
        from prometheus_client import Counter as PromCounter

        arm_labels = ["pipeline", "model", "arm"]
        self.rollout_events = PromCounter(
            "headrace_pipeline_rollout_events",
            "Events routed to each arm of a running rollout (baseline or candidate).",
            arm_labels,
            registry=registry,
        )
        self.rollout_errors = PromCounter(
            "headrace_pipeline_rollout_errors",
            "Events an arm's model failed during a rollout.",
            arm_labels,
            registry=registry,
        )
        self.rollout_weight = Gauge(
            "headrace_pipeline_rollout_weight_percent",
            "The rollout candidate's share of traffic (0 outside a rollout).",
            ["pipeline", "model"],
            registry=registry,
        )
        self._lag = _LagCollector(pipeline)
        registry.register(self._lag)
        self._settle = self.settle_seconds.labels(pipeline)

    def _for(self, release: str) -> _ReleaseSeries:
        series = self._series.get(release)
        if series is None:
            labels = (self.pipeline, release.partition(":")[0], release)
            histograms = [
                self.batch_events.labels(*labels),
                self.model_seconds.labels(*labels),
                *(self.stage_seconds.labels(*labels, stage) for stage in STAGES),
                self.end_to_end.labels(*labels),
            ]
            series = self._series[release] = _ReleaseSeries(labels, histograms)
        return series

    def observe_batch(
        self,
        release: str,
        *,
        events: int,
        outputs: int,
        deduplicated: int,
        dead_letter_stages: Sequence[str],
        end_to_end_ms: npt.NDArray[np.float64] | None,
        marks: tuple[float, float, float, float, float],
    ) -> None:
        """Report one processed batch.

        Parameters
        ----------
        release
            The release that scored it (``fraud:3``).
        events, outputs, deduplicated
            Events polled, outputs sent, repeats dropped.
        dead_letter_stages
            The stage of each dead letter of the batch.
        end_to_end_ms
            Each output's milliseconds from event time to output, if any (kept until
            counted: pass an array the caller will not change).
        marks
            `time.perf_counter` readings: start, decoded, deduplicated, scored, sent.
        """
        start, decoded, deduped, scored, sent = marks
        cpu = time.process_time()
        with self._lock:
            series = self._for(release)
            series.events_in += events
            series.events_out += outputs
            series.deduplicated += deduplicated
            if dead_letter_stages:
                series.dead_letters.update(dead_letter_stages)
            series.cpu_seconds += max(0.0, cpu - self._cpu_mark)
            self._cpu_mark = cpu
            series.batch_events.append(events)
            series.model_seconds.append(scored - deduped)
            decode, dedupe, send = series.stage_seconds
            decode.append(decoded - start)
            dedupe.append(deduped - decoded)
            send.append(sent - scored)
            if end_to_end_ms is not None:
                series.end_to_end.append(end_to_end_ms)
            series.pending += 1
            if series.pending >= _FOLD_EVERY:
                series.fold()

    def collect(self) -> Iterable[Metric]:
        """The per-release families, counted up to now (a `CollectorRegistry` hook)."""
        from prometheus_client.core import CounterMetricFamily

        labels = ["pipeline", "model", "release"]
        events_in = CounterMetricFamily(
            "headrace_pipeline_events_in",
            "Events polled from the source, repeats and bad ones included.",
            labels=labels,
        )
        events_out = CounterMetricFamily(
            "headrace_pipeline_events_out",
            "Outputs (predictions) sent to the output sinks.",
            labels=labels,
        )
        deduplicated = CounterMetricFamily(
            "headrace_pipeline_deduplicated",
            "Repeats dropped because their id was already emitted.",
            labels=labels,
        )
        dead_letters = CounterMetricFamily(
            "headrace_pipeline_dead_letters",
            "Events sent to the dead-letter sink, by the stage that refused them.",
            labels=[*labels, "stage"],
        )
        cpu_seconds = CounterMetricFamily(
            "headrace_pipeline_cpu_seconds",
            "Process CPU time (every thread) spent while this release scored events; "
            "divided by events_out, the cost of a prediction.",
            labels=labels,
        )
        with self._lock:
            for _, series in sorted(self._series.items()):
                series.fold()
                values = list(series.labels)
                events_in.add_metric(values, series.events_in)
                events_out.add_metric(values, series.events_out)
                deduplicated.add_metric(values, series.deduplicated)
                cpu_seconds.add_metric(values, series.cpu_seconds)
                for stage, count in sorted(series.dead_letters.items()):
                    dead_letters.add_metric([*values, stage], count)
        return [
            events_in,
            events_out,
            deduplicated,
            dead_letters,
            cpu_seconds,
            *self.batch_events.collect(),
            *self.end_to_end.collect(),
            *self.model_seconds.collect(),
            *self.stage_seconds.collect(),
        ]

    def describe(self) -> Iterable[Metric]:
        """The families, so a registry refuses a duplicate name at registration (when
        there is nothing to count yet)."""
        return self.collect()

    def observe_settle(self, seconds: float) -> None:
        """Report one settle's duration."""
        self._settle.observe(seconds)

    def observe_lag(self, lags: Mapping[tuple[str, str], int] | None) -> None:
        """Replace the lag series with `lags` (from `source_lag`); None: lag unknown.

        Replaced, not updated: a partition given up in a rebalance must not keep
        reporting its last lag from this worker.
        """
        self._lag.lags = dict(lags) if lags is not None else {}

    def observe_load(self, release: str, *, seconds: float, memory_bytes: int | None) -> None:
        """Report the release's load: its duration and, where measured, its memory.

        Also restarts the CPU accounting, so a release is not charged for its own load.
        """
        labels = (self.pipeline, release.partition(":")[0], release)
        self.model_load.labels(*labels).set(seconds)
        if memory_bytes is not None:
            self.model_memory.labels(*labels).set(memory_bytes)
        self._cpu_mark = time.process_time()

    def observe_arms(
        self, model: str, *, events: Mapping[str, int], errors: Mapping[str, int]
    ) -> None:
        """Count one batch's events and model failures per rollout arm (``baseline``,
        ``candidate``: two label values, whatever the traffic)."""
        for arm, count in events.items():
            if count:
                self.rollout_events.labels(self.pipeline, model, arm).inc(count)
        for arm, count in errors.items():
            if count:
                self.rollout_errors.labels(self.pipeline, model, arm).inc(count)

    def observe_routing(self, model: str, *, weight: float) -> None:
        """Report the candidate's traffic share after a switch (0: no rollout)."""
        self.rollout_weight.labels(self.pipeline, model).set(weight)

    def watch_in_flight(self, count: Callable[[], int]) -> None:
        """Read the in-flight gauge from `count` at scrape time (no cost per batch)."""
        self.in_flight.labels(self.pipeline).set_function(lambda: float(count()))


class _LagCollector:
    """Consumer lag per partition, as of the worker's last stats tick."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self.lags: Lags = {}

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "headrace_pipeline_consumer_lag_events",
            "Events in the source after this worker's read position, per partition it "
            'owns (partition="all" where the source only knows a total).',
            labels=["pipeline", "topic", "partition"],
        )
        for (topic, partition), lag in sorted(self.lags.items()):
            family.add_metric([self.pipeline, topic, partition], lag)
        return [family]

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class SampleCounts(Protocol):
    """What `SampleMetrics` reads of a payload sampler (`PayloadSampler` has these)."""

    written: int
    dropped: int
    failed: int


class SampleMetrics:
    """Payload-sample rows written and lost, read from the sampler at scrape time.

    Samples are best effort (scoring never waits for them), so a full disk or a slow
    sink loses rows silently unless something counts them where an alert can see it:
    ``reason="dropped"`` (the buffer was full) and ``reason="failed"`` (the sink raised,
    e.g. no space left on device).

    Parameters
    ----------
    registry
        Where the series are registered.
    pipeline
        The ``pipeline`` label.
    sampler
        The sampler whose counters are read.
    """

    def __init__(
        self, registry: CollectorRegistry, *, pipeline: str, sampler: SampleCounts
    ) -> None:
        self.pipeline = pipeline
        self.sampler = sampler
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        """The two counter families, as of now (a `CollectorRegistry` hook)."""
        from prometheus_client.core import CounterMetricFamily

        written = CounterMetricFamily(
            "headrace_samples_written",
            "Payload-sample rows handed to the sample sink.",
            labels=["pipeline"],
        )
        written.add_metric([self.pipeline], self.sampler.written)
        lost = CounterMetricFamily(
            "headrace_samples_lost",
            "Payload-sample rows lost: the buffer was full (dropped) or the sink failed "
            "(failed, e.g. a full disk). Scoring is never affected.",
            labels=["pipeline", "reason"],
        )
        lost.add_metric([self.pipeline, "dropped"], self.sampler.dropped)
        lost.add_metric([self.pipeline, "failed"], self.sampler.failed)
        return [written, lost]

    def describe(self) -> Iterable[Metric]:
        """The families, so a registry refuses a duplicate name at registration."""
        return self.collect()


def source_lag(source: object) -> Lags | None:
    """A source's consumer lag by ``(topic, partition)``, or None when it cannot tell.

    Uses the source's ``partition_lag()`` (``{(topic, partition): lag}``) where it has
    one, else its total ``lag()`` under partition ``"all"``. Asks the broker, so call it
    seldom (the worker does once per stats interval).
    """
    per_partition = getattr(source, "partition_lag", None)
    if callable(per_partition):
        lags = per_partition()
        if lags is None:
            return None
        return {(str(topic), str(partition)): int(lag) for (topic, partition), lag in lags.items()}
    total = getattr(source, "lag", None)
    value = total() if callable(total) else None
    if value is None:
        return None
    return {(str(getattr(source, "topic", "")), "all"): int(value)}


class DriftMetrics:
    """Drift series for the detectors: p-values per column and alarms per column.

    Parameters
    ----------
    registry
        Where the series are registered (the worker's, so one scrape has both).
    pipeline
        The ``pipeline`` label.
    """

    def __init__(self, registry: CollectorRegistry, *, pipeline: str) -> None:
        from prometheus_client import Counter, Gauge

        self.pipeline = pipeline
        labels = ["pipeline", "model", "release", "column"]
        self.p_value = Gauge(
            "headrace_drift_p_value",
            "The last drift test's p-value of a column (low: its distribution moved).",
            labels,
            registry=registry,
        )
        self.alarms = Counter(
            "headrace_drift_alarms",
            "Drift alarms raised, per column that moved.",
            labels,
            registry=registry,
        )

    def observe_p_values(self, release: str, p_values: Mapping[str, float]) -> None:
        """Set each column's p-value from the last test of `release`'s inputs."""
        model = release.partition(":")[0]
        for column, value in p_values.items():
            self.p_value.labels(self.pipeline, model, release, column).set(value)

    def observe_alarm(self, release: str, columns: Iterable[str]) -> None:
        """Count one alarm for each column it names (at least one series moves)."""
        model = release.partition(":")[0]
        named = list(columns) or [""]
        for column in named:
            self.alarms.labels(self.pipeline, model, release, column).inc()


class MetricsServer:
    """``/metrics`` over HTTP from a background thread; `close` stops it.

    Attributes
    ----------
    host, port
        Where it listens (the real port when 0 was asked for).
    """

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host, self.port = server.server_address[:2]

    @property
    def url(self) -> str:
        """The scrape URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    registry: CollectorRegistry, *, port: int, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve `registry` at ``http://host:port/metrics`` (prometheus-client's server).

    Raises
    ------
    ConfigError
        When the port is out of range or the address cannot be bound.
    """
    from prometheus_client import start_http_server

    if not 0 <= port <= 65535:
        raise ConfigError(
            f"Metrics port {port} is not within 0..65535: pass e.g. --metrics-port 9108"
        )
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"Cannot serve metrics on {host}:{port}: {reason}. Pick a free --metrics-port "
            "or a local --metrics-host (127.0.0.1, 0.0.0.0, ::)."
        ) from exc
    return MetricsServer(server, thread)
