"""Counters and latency percentiles a worker keeps about itself."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LatencyReservoir", "WorkerStats"]


class LatencyReservoir:
    """A bounded uniform sample of latencies (milliseconds) for percentiles."""

    def __init__(self, capacity: int = 50_000, *, seed: int = 0) -> None:
        self.capacity = capacity
        self._values = np.empty(capacity, dtype=np.float64)
        self._size = 0
        self._seen = 0
        self._rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        """Add a batch of latencies (Algorithm R, vectorised over the batch)."""
        batch = np.asarray(values, dtype=np.float64).ravel()
        free = min(self.capacity - self._size, batch.size)
        if free > 0:
            self._values[self._size : self._size + free] = batch[:free]
            self._size += free
        rest = batch[free:]
        if rest.size:
            seen = self._seen + free + np.arange(1, rest.size + 1)
            slots = self._rng.integers(0, seen)
            keep = slots < self.capacity
            self._values[slots[keep]] = rest[keep]
        self._seen += batch.size

    def percentiles(self, *qs: float) -> list[float]:
        """The requested percentiles (0-100); NaN when empty."""
        if self._size == 0:
            return [float("nan")] * len(qs)
        return [float(v) for v in np.percentile(self._values[: self._size], qs)]


@dataclass
class WorkerStats:
    """What a worker did: counts, reasons for dead letters, latencies."""

    events: int = 0
    outputs: int = 0
    dead_letters: int = 0
    deduplicated: int = 0
    batches: int = 0
    lag: int | None = None
    busy_s: float = 0.0
    """Seconds spent handling batches (decode to sent): the worker's own time, not the
    time it waited for events, so ``events / busy_s`` is what it could keep up with."""
    started: float = field(default_factory=time.monotonic)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    batch_latency_ms: LatencyReservoir = field(default_factory=LatencyReservoir)
    end_to_end_ms: LatencyReservoir = field(default_factory=LatencyReservoir)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the worker started."""
        return time.monotonic() - self.started

    def throughput(self) -> float:
        """Events per second since start."""
        elapsed = self.elapsed_s
        return self.events / elapsed if elapsed > 0 else 0.0

    def summary(self) -> dict[str, object]:
        """A JSON-friendly snapshot."""
        p50, p95, p99 = self.batch_latency_ms.percentiles(50, 95, 99)
        e50, e99 = self.end_to_end_ms.percentiles(50, 99)
        return {
            "events": self.events,
            "outputs": self.outputs,
            "dead_letters": self.dead_letters,
            "deduplicated": self.deduplicated,
            "batches": self.batches,
            "lag": self.lag,
            "seconds": round(self.elapsed_s, 3),
            "busy_s": round(self.busy_s, 3),
            "events_per_s": round(self.throughput(), 1),
            "processing_ms": {"p50": p50, "p95": p95, "p99": p99},
            "end_to_end_ms": {"p50": e50, "p99": e99},
            "dead_letter_reasons": dict(self.dead_letter_reasons.most_common(20)),
        }
