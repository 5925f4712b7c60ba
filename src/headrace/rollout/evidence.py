"""Per-arm evidence as sufficient statistics: counts and histograms that simply add up.

Each worker and server accumulates what its share of traffic showed, per rollout step and
per arm, and writes the running totals to the registry; the lease holder sums every
process's rows and judges the sum. Nothing here depends on the order events arrived in, so
summing across processes loses nothing the judge's tests use: error counts (proportion
tests), latency histograms over fixed log-spaced bins (quantile confidence sequences; a
bin's edges bound the order statistics), score histograms over the rollout's bins (the
binned distribution e-process) with sums for the mean, and, in shadow, paired counts.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from headrace.types import Array

__all__ = ["LATENCY_EDGES_MS", "ArmEvidence", "PairEvidence", "StepEvidence"]

LATENCY_EDGES_MS: tuple[float, ...] = tuple(
    float(x) for x in np.round(np.geomspace(0.01, 60_000.0, 321), 6)
)
"""Inner edges of the latency histogram: 0.01 ms to 60 s, each bin about 5% wide."""


class ArmEvidence(msgspec.Struct, kw_only=True):
    """What one arm showed: events, model errors, model latency, scores.

    Attributes
    ----------
    events
        Rows routed to this arm (scored or failed by its model).
    errors
        Rows this arm's model failed (an exception isolated to the row, an output that
        cannot be encoded, a rejection only this arm's schema makes).
    latency_counts
        Model calls per latency bin (``len(LATENCY_EDGES_MS) + 1`` bins, or empty before
        the first call). One observation per call of equal size on both arms (the worker
        times matched-size calls), per request on a server.
    score_counts
        Scored rows per score bin (``len(plan.score_edges) + 1`` bins, or empty).
    score_sum, score_sumsq
        Sum and sum of squares of the scores (for the mean-score confidence sequence).
    scored
        Rows with a score.
    """

    events: int = 0
    errors: int = 0
    latency_counts: list[int] = msgspec.field(default_factory=list)
    score_counts: list[int] = msgspec.field(default_factory=list)
    score_sum: float = 0.0
    score_sumsq: float = 0.0
    scored: int = 0

    def add(self, other: ArmEvidence) -> None:
        """Add `other`'s counts into this one."""
        self.events += other.events
        self.errors += other.errors
        self.latency_counts = _add_counts(self.latency_counts, other.latency_counts)
        self.score_counts = _add_counts(self.score_counts, other.score_counts)
        self.score_sum += other.score_sum
        self.score_sumsq += other.score_sumsq
        self.scored += other.scored

    def record_calls(self, latencies_ms: Array | list[float]) -> None:
        """Count model calls' latencies (milliseconds) into the latency histogram."""
        values = np.asarray(latencies_ms, dtype=np.float64)
        if values.size == 0:
            return
        bins = np.searchsorted(np.asarray(LATENCY_EDGES_MS), values, side="right")
        counts = np.bincount(bins, minlength=len(LATENCY_EDGES_MS) + 1)
        self.latency_counts = _add_counts(self.latency_counts, counts.tolist())

    def record_scores(self, scores: Array, *, edges: tuple[float, ...]) -> None:
        """Count scored rows into the score histogram over `edges` and the sums."""
        values = np.asarray(scores, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
        counts = np.bincount(bins, minlength=len(edges) + 1)
        self.score_counts = _add_counts(self.score_counts, counts.tolist())
        self.score_sum += float(values.sum())
        self.score_sumsq += float(np.dot(values, values))
        self.scored += int(values.size)

    @property
    def error_rate(self) -> float:
        """Errors over events (0 before any event)."""
        return self.errors / self.events if self.events else 0.0

    @property
    def mean_score(self) -> float:
        """The mean score (NaN before any score)."""
        return self.score_sum / self.scored if self.scored else math.nan


class PairEvidence(msgspec.Struct, kw_only=True):
    """Shadowed events scored by both arms: how often they disagree, and by how much.

    Attributes
    ----------
    pairs
        Events scored by both releases.
    disagreements
        Pairs whose predictions differ.
    diff_sum, diff_sumsq, diffs
        Sum and sum of squares of candidate score minus baseline score, and how many
        pairs had both scores.
    """

    pairs: int = 0
    disagreements: int = 0
    diff_sum: float = 0.0
    diff_sumsq: float = 0.0
    diffs: int = 0

    def add(self, other: PairEvidence) -> None:
        """Add `other`'s counts into this one."""
        self.pairs += other.pairs
        self.disagreements += other.disagreements
        self.diff_sum += other.diff_sum
        self.diff_sumsq += other.diff_sumsq
        self.diffs += other.diffs

    def record(
        self,
        *,
        baseline_predictions: Array,
        candidate_predictions: Array,
        baseline_scores: Array | None,
        candidate_scores: Array | None,
    ) -> None:
        """Count aligned pairs (one row per event scored by both arms)."""
        n = len(baseline_predictions)
        if n == 0:
            return
        self.pairs += n
        self.disagreements += int(
            np.count_nonzero(np.asarray(baseline_predictions) != np.asarray(candidate_predictions))
        )
        if baseline_scores is not None and candidate_scores is not None:
            diff = np.asarray(candidate_scores, np.float64) - np.asarray(
                baseline_scores, np.float64
            )
            diff = diff[np.isfinite(diff)]
            self.diff_sum += float(diff.sum())
            self.diff_sumsq += float(np.dot(diff, diff))
            self.diffs += int(diff.size)


class StepEvidence(msgspec.Struct, kw_only=True):
    """Everything one rollout step showed, per arm and in pairs (shadow)."""

    baseline: ArmEvidence = msgspec.field(default_factory=ArmEvidence)
    candidate: ArmEvidence = msgspec.field(default_factory=ArmEvidence)
    pairs: PairEvidence = msgspec.field(default_factory=PairEvidence)

    def add(self, other: StepEvidence) -> None:
        """Add `other`'s counts into this one."""
        self.baseline.add(other.baseline)
        self.candidate.add(other.candidate)
        self.pairs.add(other.pairs)

    @property
    def empty(self) -> bool:
        """Whether nothing was recorded."""
        return not (self.baseline.events or self.candidate.events or self.pairs.pairs)


def _add_counts(a: list[int], b: list[int]) -> list[int]:
    if not b:
        return a
    if not a:
        return list(b)
    if len(a) != len(b):
        raise ValueError(f"histograms of {len(a)} and {len(b)} bins cannot be added")
    return [x + y for x, y in zip(a, b, strict=True)]
