"""A Prometheus histogram that takes a whole batch of observations in one call.

prometheus-client's `Histogram.observe` costs about a microsecond per value (a bisect, a
lock, two increments): 512 calls per 512-event batch would cost a worker more than some
of its stages. `BatchHistogram` counts a batch's values into its buckets with numpy
(``searchsorted`` + ``bincount``) under one lock, and renders the usual ``_bucket``,
``_count`` and ``_sum`` series when Prometheus scrapes, so PromQL sees an ordinary
histogram.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["BatchHistogram", "BatchHistogramChild"]


class BatchHistogramChild:
    """The buckets of one label combination; see `BatchHistogram.labels`."""

    __slots__ = ("_bounds", "_bounds_list", "_counts", "_lock", "_single", "_sum")

    def __init__(self, bounds: npt.NDArray[np.float64]) -> None:
        self._bounds = bounds
        self._bounds_list = bounds.tolist()  # bisect on a list: a tenth of numpy's call cost
        # One slot per finite bound plus +Inf; kept per bucket, made cumulative at scrape.
        # Batches add into the numpy array, single values into the list (a numpy item
        # update costs more than the rest of `observe`); a scrape adds the two.
        self._counts = np.zeros(len(bounds) + 1, dtype=np.int64)
        self._single = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: npt.ArrayLike) -> None:
        """Count every value of `values` (negative ones as 0; NaN ones not at all).

        Negative values come from clocks that disagree (an event stamped by a producer
        whose clock runs ahead): counting them as 0 keeps ``_sum`` a counter, which
        ``rate()`` needs.
        """
        batch = np.maximum(np.asarray(values, dtype=np.float64).ravel(), 0.0)
        if batch.size == 0:
            return
        total = float(batch.sum())
        if math.isnan(total):  # rare: pay for the filter only then
            batch = batch[~np.isnan(batch)]
            total = float(batch.sum())
        # side="left": a value equal to a bound belongs to that bucket (``le`` is <=).
        slots = np.searchsorted(self._bounds, batch, side="left")
        counts = np.bincount(slots, minlength=self._counts.size)
        with self._lock:
            self._counts += counts
            self._sum += total

    def observe(self, value: float) -> None:
        """Count one value (for once-per-batch quantities)."""
        if math.isnan(value):
            return
        value = max(value, 0.0)
        slot = bisect.bisect_left(self._bounds_list, value)  # as searchsorted side="left"
        with self._lock:
            self._single[slot] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative bucket counts (the last is the total) and the sum."""
        with self._lock:
            counts = self._counts + np.asarray(self._single, dtype=np.int64)
            total = self._sum
        return [int(c) for c in np.cumsum(counts)], total


class BatchHistogram:
    """A labelled histogram whose children take arrays of observations.

    Parameters
    ----------
    name
        The metric name, without ``_bucket``/``_count``/``_sum``.
    documentation
        The HELP text.
    labelnames
        The label names; each `labels` call gives one value per name.
    buckets
        Increasing upper bounds (``+Inf`` is implied).
    registry
        Where to register; None to register nothing (collect it yourself).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        bounds = np.asarray([float(b) for b in buckets if math.isfinite(b)], dtype=np.float64)
        if bounds.size == 0 or np.any(np.diff(bounds) <= 0):
            raise ValueError(
                f"Histogram '{name}': buckets must be finite and strictly increasing, "
                f"got {list(buckets)}"
            )
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = bounds
        self._les = [_le(b) for b in bounds] + ["+Inf"]
        self._children: dict[tuple[str, ...], BatchHistogramChild] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> BatchHistogramChild:
        """The child for these label values (created on first use; cache it)."""
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"Histogram '{self.name}' takes labels {list(self.labelnames)}, "
                f"got {len(values)} values: {list(values)}"
            )
        child = self._children.get(values)
        if child is None:
            with self._lock:
                child = self._children.setdefault(values, BatchHistogramChild(self._bounds))
        return child

    def remove(self, *values: str) -> None:
        """Forget one label combination (its series disappear from the next scrape)."""
        with self._lock:
            self._children.pop(values, None)

    def collect(self) -> Iterable[Metric]:
        """The histogram family, as a `CollectorRegistry` asks for it at scrape time."""
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labelnames))
        with self._lock:
            children = sorted(self._children.items())
        for values, child in children:
            cumulative, total = child.snapshot()
            family.add_metric(
                list(values),
                [(le, float(count)) for le, count in zip(self._les, cumulative, strict=True)],
                sum_value=total,
            )
        return [family]

    def describe(self) -> Iterable[Metric]:
        """The family without samples, so a registry can refuse a duplicate name early."""
        from prometheus_client.core import HistogramMetricFamily

        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]


def _le(bound: float) -> str:
    """The ``le`` label of a finite bound, as prometheus-client writes its own (``0.5``,
    ``1.0``, ``512.0``)."""
    return repr(float(bound))
