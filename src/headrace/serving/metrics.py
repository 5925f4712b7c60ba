"""The server's Prometheus metrics: requests, latency, batches and queues, per model, and
per rollout arm (``arm``: ``baseline`` or ``candidate``, two values whatever the traffic).

One `ServerMetrics` per server, on the same `CollectorRegistry` the model repository
reports its pool and swaps to, so ``/metrics`` shows everything in one exposition.
Labelled children are cached: the per-request cost is a dict lookup and two increments.
Queue depth is read from the batchers when Prometheus scrapes, never written per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from headrace.errors import DependencyMissingError

# Workers and servers share buckets, so one dashboard reads both.
from headrace.monitoring.metrics import BATCH_BUCKETS as _BATCH_BUCKETS
from headrace.monitoring.metrics import LATENCY_BUCKETS
from headrace.serving.batching import AdaptiveBatcher, BatchReport

if TYPE_CHECKING:
    import prometheus_client

__all__ = ["ServerMetrics", "new_registry"]


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise DependencyMissingError("prometheus_client", "server", "headrace serve") from exc
    return prometheus_client


def new_registry() -> prometheus_client.CollectorRegistry:
    """A fresh registry for one server (the global default would mix test servers)."""
    registry: prometheus_client.CollectorRegistry = _prometheus().CollectorRegistry()
    return registry


class ServerMetrics:
    """Request, latency, batch and queue metrics of one server.

    Parameters
    ----------
    registry
        Where the metrics are registered (share it with `ModelRepository`).
    batchers
        Called at scrape time: model key -> batcher, for the queue-depth gauges.
    """

    def __init__(
        self,
        registry: prometheus_client.CollectorRegistry,
        *,
        batchers: Callable[[], Mapping[str, AdaptiveBatcher]] = dict,
    ) -> None:
        prometheus = _prometheus()
        self.registry = registry
        self.requests = prometheus.Counter(
            "headrace_http_requests",
            "HTTP requests answered, by model, endpoint and status code.",
            ["model", "endpoint", "status"],
            registry=registry,
        )
        self.latency = prometheus.Histogram(
            "headrace_http_request_seconds",
            "Time from a request's arrival to its answer, by model and endpoint.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_rows = prometheus.Histogram(
            "headrace_batch_rows",
            "Rows per batch run through the model.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_requests = prometheus.Histogram(
            "headrace_batch_requests",
            "Requests merged into one batch.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = prometheus.Histogram(
            "headrace_batch_seconds",
            "Time one batch spent in validation, the model and post-processing.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = prometheus.Histogram(
            "headrace_batch_queue_seconds",
            "Time the oldest request of a batch waited in the queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_failures = prometheus.Counter(
            "headrace_batch_failures",
            "Batches whose inference call raised (every request in them failed).",
            ["model"],
            registry=registry,
        )
        self.arm_requests = prometheus.Counter(
            "headrace_rollout_requests",
            "Requests each rollout arm scored (in shadow the candidate's copies).",
            ["model", "arm"],
            registry=registry,
        )
        self.arm_rows = prometheus.Counter(
            "headrace_rollout_rows",
            "Rows each rollout arm scored.",
            ["model", "arm"],
            registry=registry,
        )
        self.arm_errors = prometheus.Counter(
            "headrace_rollout_errors",
            "Rows each rollout arm's model failed (model failures, not bad input).",
            ["model", "arm"],
            registry=registry,
        )
        self.arm_latency = prometheus.Histogram(
            "headrace_rollout_model_seconds",
            "Model time of the batch that scored each request, by rollout arm.",
            ["model", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow_dropped = prometheus.Counter(
            "headrace_rollout_shadow_dropped",
            "Requests not shadowed because too many shadow scorings were running.",
            ["model"],
            registry=registry,
        )
        registry.register(_QueueCollector(batchers))
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}
        self._arms: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def observe(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (model, endpoint, status)
        counter = self._counted.get(key)
        if counter is None:
            counter = self._counted[key] = self.requests.labels(model, endpoint, str(status))
        counter.inc()
        timer = self._timed.get(key[:2])
        if timer is None:
            timer = self._timed[key[:2]] = self.latency.labels(model, endpoint)
        timer.observe(seconds)

    def observe_arm(
        self, model: str, arm: str, *, rows: int, errors: int, seconds: float | None
    ) -> None:
        """Count one request scored by a rollout arm: its rows, the rows its model failed
        and its batch's model time (None: not measured)."""
        key = (model, arm)
        children = self._arms.get(key)
        if children is None:
            children = self._arms[key] = (
                self.arm_requests.labels(model, arm),
                self.arm_rows.labels(model, arm),
                self.arm_errors.labels(model, arm),
                self.arm_latency.labels(model, arm),
            )
        requests, counted, failed, latency = children
        requests.inc()
        counted.inc(rows)
        if errors:
            failed.inc(errors)
        if seconds is not None:
            latency.observe(seconds)

    def batch_observer(self, model: str) -> Callable[[BatchReport], None]:
        """The ``on_batch`` callback for `model`'s batcher."""
        rows = self.batch_rows.labels(model)
        requests = self.batch_requests.labels(model)
        run = self.batch_seconds.labels(model)
        queued = self.queue_seconds.labels(model)
        failures = self.batch_failures.labels(model)

        def observe(report: BatchReport) -> None:
            rows.observe(report.rows)
            requests.observe(report.requests)
            run.observe(report.run_s)
            queued.observe(report.waited_s)
            if report.failed:
                failures.inc()

        return observe

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type, for ``GET /metrics``."""
        prometheus = _prometheus()
        body: bytes = prometheus.generate_latest(self.registry)
        return body, str(prometheus.CONTENT_TYPE_LATEST)


class _QueueCollector:
    """Queue depth per model, read from the batchers at scrape time."""

    def __init__(self, batchers: Callable[[], Mapping[str, AdaptiveBatcher]]) -> None:
        self._batchers = batchers

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        rows = GaugeMetricFamily(
            "headrace_queue_rows", "Rows waiting for a batch, by model.", labels=["model"]
        )
        requests = GaugeMetricFamily(
            "headrace_queue_requests", "Requests waiting for a batch, by model.", labels=["model"]
        )
        for model, batcher in sorted(self._batchers().items()):
            rows.add_metric([model], batcher.queued_rows)
            requests.add_metric([model], batcher.queued_requests)
        return [rows, requests]

    def describe(self) -> Iterable[Any]:
        return []
