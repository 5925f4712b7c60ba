"""Live accuracy: ground-truth labels that arrive late, joined to the predictions kept.

A fraud label comes days after the transaction; a churn label, weeks. The worker keeps
every prediction it made (event id, release, prediction, score) in a bounded ring, a
feedback source delivers ``(event id, label)`` pairs later, and `AccuracyMonitor` joins
them and keeps the last `window` joined rows per release, from which it reports accuracy,
precision, recall, ROC AUC and calibration (expected calibration error, reliability bins).

Memory is bounded twice: at most `max_pending` predictions wait for a label (the oldest
are evicted first) and none waits longer than `ttl_s`. What left unjoined is counted
(`JoinStats.expired`, `JoinStats.evicted`), and a label that arrives for a prediction
that already left is counted as `JoinStats.late`, not silently dropped, so a report
says how much of the traffic it speaks for.

Keeping a batch's predictions costs per batch, not per event: they are copied into the
ring in slices, and the event id -> slot index (a dict insert per event, which misses
the CPU caches once hundreds of thousands wait) is brought up to date only when labels
come, in one C-speed `dict.update` over everything kept since. A worker whose labels
come rarely, or never, pays nothing for it. (One consequence: a prediction repeated
before it was ever indexed, an event redelivered after a crash, counts twice if both
copies leave unjoined.)

The metrics are plain numpy, checked against scikit-learn in the tests: AUC is the
rank-based (Mann-Whitney) statistic with average ranks for ties; calibration bins scores
uniformly over [0, 1] the way ``sklearn.calibration.calibration_curve`` does.
"""

from __future__ import annotations

import math
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "AccuracyMonitor",
    "AccuracyReport",
    "JoinStats",
    "ReliabilityBin",
    "calibration_error",
    "roc_auc",
]

_Bools = npt.NDArray[np.bool_]
_Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One bin of a reliability diagram: scores in ``[lower, upper)`` (the last bin
    includes 1.0), how many, their mean score and the share that were positive."""

    lower: float
    upper: float
    count: int
    mean_score: float
    positive_rate: float


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    """Rolling quality of one release over its last joined predictions.

    A metric is None when it is undefined on the window: precision without a predicted
    positive, recall without an actual positive, AUC without both classes, AUC and
    calibration without scores.
    """

    release: str
    joined: int
    positives: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    auc: float | None
    ece: float | None
    bins: tuple[ReliabilityBin, ...]


@dataclass(frozen=True, slots=True)
class JoinStats:
    """Counters of the join since the monitor started.

    Attributes
    ----------
    pending
        Predictions waiting for their label now.
    joined
        Labels matched to a prediction.
    expired
        Predictions dropped unjoined after `ttl_s`.
    evicted
        Predictions dropped unjoined because `max_pending` were already waiting.
    late
        Labels for a prediction that had already expired or been evicted.
    unknown
        Labels for an event id never seen (another worker's event, or a label that
        came before its prediction).
    invalid
        Labels that are not a class of the model (counted, not joined).
    """

    pending: int
    joined: int
    expired: int
    evicted: int
    late: int
    unknown: int
    invalid: int


def roc_auc(truth: _Bools, scores: _Floats) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (ties get average ranks); None when only
    one class is present. Rows with a NaN score are left out."""
    truth = np.asarray(truth, dtype=np.bool_)
    scores = np.asarray(scores, dtype=np.float64)
    finite = ~np.isnan(scores)
    if not finite.all():
        truth, scores = truth[finite], scores[finite]
    n = len(scores)
    n_pos = int(np.count_nonzero(truth))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts_mask = np.empty(n, dtype=np.bool_)
    starts_mask[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts_mask[1:])
    starts = np.flatnonzero(starts_mask)
    ends = np.append(starts[1:], n)
    average = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = average[np.cumsum(starts_mask) - 1]
    u = float(ranks[truth].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def calibration_error(
    truth: _Bools, scores: _Floats, *, n_bins: int = 10
) -> tuple[float | None, tuple[ReliabilityBin, ...]]:
    """Expected calibration error and the non-empty reliability bins.

    Scores are binned uniformly over [0, 1] (``calibration_curve(strategy="uniform")``'s
    binning); ECE is the count-weighted mean of ``|mean score - positive rate|`` over the
    bins. None (and no bins) without a finite score.
    """
    truth = np.asarray(truth, dtype=np.bool_)
    scores = np.asarray(scores, dtype=np.float64)
    finite = ~np.isnan(scores)
    truth, scores = truth[finite], scores[finite]
    n = len(scores)
    if n == 0:
        return None, ()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], scores)
    counts = np.bincount(index, minlength=n_bins)
    score_sums = np.bincount(index, weights=scores, minlength=n_bins)
    positive_sums = np.bincount(index, weights=truth.astype(np.float64), minlength=n_bins)
    bins: list[ReliabilityBin] = []
    ece = 0.0
    for b in np.flatnonzero(counts).tolist():
        count = int(counts[b])
        mean_score = float(score_sums[b]) / count
        rate = float(positive_sums[b]) / count
        ece += count / n * abs(mean_score - rate)
        bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), count, mean_score, rate))
    return ece, tuple(bins)


class _Window:
    """The last `size` joined rows of one release, in rings."""

    __slots__ = ("correct", "filled", "next", "predicted", "scores", "truth")

    def __init__(self, size: int) -> None:
        self.truth = np.zeros(size, dtype=np.bool_)
        self.predicted = np.zeros(size, dtype=np.bool_)
        self.correct = np.zeros(size, dtype=np.bool_)
        self.scores = np.full(size, np.nan)
        self.next = 0
        self.filled = 0

    def extend(self, truth: _Bools, predicted: _Bools, correct: _Bools, scores: _Floats) -> None:
        size = len(self.truth)
        if len(truth) > size:
            truth, predicted, correct = truth[-size:], predicted[-size:], correct[-size:]
            scores = scores[-size:]
        slots = (self.next + np.arange(len(truth))) % size
        self.truth[slots] = truth
        self.predicted[slots] = predicted
        self.correct[slots] = correct
        self.scores[slots] = scores
        self.next = int((self.next + len(truth)) % size)
        self.filled = min(size, self.filled + len(truth))

    def report(self, release: str, *, n_bins: int) -> AccuracyReport:
        n = self.filled
        truth, predicted = self.truth[:n], self.predicted[:n]
        scores = self.scores[:n]
        positives = int(np.count_nonzero(truth))
        flagged = int(np.count_nonzero(predicted))
        true_positives = int(np.count_nonzero(truth & predicted))
        ece, bins = calibration_error(truth, scores, n_bins=n_bins)
        return AccuracyReport(
            release=release,
            joined=n,
            positives=positives,
            accuracy=float(np.count_nonzero(self.correct[:n])) / n if n else None,
            precision=true_positives / flagged if flagged else None,
            recall=true_positives / positives if positives else None,
            auc=roc_auc(truth, scores),
            ece=ece,
            bins=bins,
        )


class AccuracyMonitor:
    """Joins late labels to kept predictions and reports rolling quality per release.

    Thread-safe: the worker adds predictions per batch while a feedback thread adds
    labels.

    Parameters
    ----------
    positive
        The prediction value that means "positive" (``fraud``, or 1): precision, recall,
        AUC and calibration are about it, and scores are taken as its probability.
    classes
        The model's prediction values (e.g. ``[legit, fraud]``). With two classes a label
        may also be given as 0/1 or false/true (by position); a label that is none of
        them is counted as invalid. None accepts any label and compares it as given.
    max_pending
        How many predictions may wait for a label; the oldest beyond are evicted.
    ttl_s
        How long a prediction waits for its label.
    window
        How many joined rows per release the metrics cover.
    n_bins
        Reliability bins over [0, 1].
    clock
        Seconds, monotonic (a parameter so tests can move time).
    """

    def __init__(
        self,
        positive: Any,
        *,
        classes: Sequence[Any] | None = None,
        max_pending: int = 500_000,
        ttl_s: float = 24 * 3600.0,
        window: int = 10_000,
        n_bins: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("max_pending", max_pending), ("window", window), ("n_bins", n_bins)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.positive = positive
        self.max_pending = max_pending
        self.ttl_s = float(ttl_s)
        self.window = window
        self.n_bins = n_bins
        self._clock = clock
        self._labels = _label_table(positive, classes)
        # With more than two classes a score is the predicted class's probability, not the
        # positive one's: AUC and calibration would be meaningless, so they stay None.
        self._scored = classes is None or len(classes) == 2
        self._lock = threading.Lock()
        # The ring of kept predictions, oldest at `_tail`; a joined slot has id None.
        self._ids = np.empty(max_pending, dtype=object)
        self._release = np.zeros(max_pending, dtype=np.int32)
        self._prediction = np.empty(max_pending, dtype=object)
        self._scores = np.full(max_pending, np.nan)
        self._times = np.zeros(max_pending, dtype=np.float64)
        self._tail = 0
        self._count = 0
        # id -> slot of the kept predictions, except the newest `_unindexed` (see _catch_up)
        self._index: dict[str, int] = {}
        self._unindexed = 0
        # Ids that left unjoined, in two generations of at most `max_pending` each: a
        # label for one of the last `max_pending` to leave is known to be late.
        self._gone: dict[str, None] = {}
        self._gone_before: dict[str, None] = {}
        self._releases: list[str] = []
        self._release_codes: dict[str, int] = {}
        self._windows: dict[int, _Window] = {}
        self._joined = self._expired = self._evicted = 0
        self._late = self._unknown = self._invalid = 0

    # -- predictions ---------------------------------------------------------------

    def add_predictions(
        self,
        event_ids: Sequence[str],
        predictions: Sequence[Any],
        scores: Sequence[float] | None,
        *,
        release: str,
    ) -> None:
        """Keep one batch's predictions (all sequences aligned) until their labels come."""
        k = len(event_ids)
        if k == 0:
            return
        if len(predictions) != k or (scores is not None and len(scores) != k):
            raise ValueError(
                f"{k} event ids but {len(predictions)} predictions and "
                f"{'no' if scores is None else len(scores)} scores: give one of each per event"
            )
        cap = self.max_pending
        with self._lock:
            now = self._clock()
            self._expire(now)
            ids = list(event_ids)
            preds = list(predictions)
            score_array = (
                np.asarray(scores, dtype=np.float64)
                if scores is not None and self._scored
                else np.full(k, np.nan)
            )
            if k > cap:  # more than fit at all: the first ones are evicted at once
                self._evicted += k - cap
                self._remember_gone(ids[: k - cap])
                ids, preds, score_array = ids[k - cap :], preds[k - cap :], score_array[-cap:]
                k = cap
            overflow = self._count + k - cap
            if overflow > 0:
                self._evicted += self._drop_oldest(overflow)
            code = self._release_codes.get(release)
            if code is None:
                code = self._release_codes[release] = len(self._releases)
                self._releases.append(release)
            head = (self._tail + self._count) % cap
            first = min(k, cap - head)
            # contiguous slices (two when the ring wraps): cheaper than fancy indexing
            for start, lo, hi in ((head, 0, first), (0, first, k)):
                if lo == hi:
                    continue
                end = start + hi - lo
                self._ids[start:end] = ids[lo:hi]
                self._prediction[start:end] = preds[lo:hi]
                self._scores[start:end] = score_array[lo:hi]
                self._release[start:end] = code
                self._times[start:end] = now
            self._count += k
            self._unindexed += k

    def _catch_up(self) -> None:
        """Index the predictions kept since the last call (the newest `_unindexed`)."""
        n = self._unindexed
        if n == 0:
            return
        cap = self.max_pending
        start = (self._tail + self._count - n) % cap
        first = min(n, cap - start)
        index = self._index
        for lo, hi in ((start, start + first), (0, n - first)):
            if lo < hi:
                index.update(zip(self._ids[lo:hi].tolist(), range(lo, hi), strict=True))
        self._unindexed = 0

    def _drop_oldest(self, n: int) -> int:
        """Remove the `n` oldest slots; return how many of them were still unjoined."""
        cap = self.max_pending
        indexed = self._count - self._unindexed
        dropped: list[str] = []
        index = self._index
        position = 0
        for lo, hi in _ranges(self._tail, n, cap):
            ids = self._ids[lo:hi].tolist()
            # the first `indexed` slots are in the index: one is unjoined when the index
            # still points at it (not joined, not superseded by a repeat of its event)
            split = max(0, min(hi - lo, indexed - position))
            if split:
                head = ids[:split]
                live = list(
                    compress(head, map(operator.eq, map(index.get, head), range(lo, lo + split)))
                )
                deque(map(index.__delitem__, live), maxlen=0)
                dropped.extend(live)
            if split < len(ids):  # never indexed, so never joined
                dropped.extend(ids[split:])
            position += hi - lo
            self._ids[lo:hi] = None
            self._prediction[lo:hi] = None
        self._unindexed -= max(0, n - indexed)
        self._tail = (self._tail + n) % cap
        self._count -= n
        self._remember_gone(dropped)
        return len(dropped)

    def _expire(self, now: float) -> None:
        if self._count == 0:
            return
        cap = self.max_pending
        deadline = now - self.ttl_s
        # Slots are in insertion (so time) order from the tail: count the stale prefix.
        first = self._times[self._tail : min(cap, self._tail + self._count)]
        stale = int(np.searchsorted(first, deadline, side="left"))
        if stale == len(first) and self._tail + self._count > cap:
            wrapped = self._times[: self._tail + self._count - cap]
            stale += int(np.searchsorted(wrapped, deadline, side="left"))
        if stale:
            self._expired += self._drop_oldest(stale)

    def _remember_gone(self, ids: list[str]) -> None:
        cap = self.max_pending
        self._gone.update(dict.fromkeys(ids[-cap:]))
        if len(self._gone) >= cap:  # a new generation; the one before is forgotten
            self._gone_before, self._gone = self._gone, {}

    def _was_gone(self, event_id: str) -> bool:
        return event_id in self._gone or event_id in self._gone_before

    # -- labels --------------------------------------------------------------------

    def add_labels(self, event_ids: Sequence[str], labels: Sequence[Any]) -> int:
        """Join labels to kept predictions; returns how many joined."""
        if len(event_ids) != len(labels):
            raise ValueError(
                f"{len(event_ids)} event ids but {len(labels)} labels: give one label per id"
            )
        table = self._labels
        with self._lock:
            self._expire(self._clock())
            self._catch_up()
            slots: list[int] = []
            truths: list[Any] = []
            index = self._index
            for event_id, label in zip(event_ids, labels, strict=True):
                truth = _lookup(table, label)
                if truth is _INVALID:
                    self._invalid += 1
                    continue
                slot = index.pop(event_id, None)
                if slot is None:
                    if self._was_gone(event_id):
                        self._late += 1
                    else:
                        self._unknown += 1
                    continue
                self._ids[slot] = None
                slots.append(slot)
                truths.append(truth)
            if not slots:
                return 0
            self._joined += len(slots)
            at = np.asarray(slots, dtype=np.intp)
            predicted_values = self._prediction[at].tolist()
            self._prediction[at] = None
            codes = self._release[at]
            scores = self._scores[at]
            positive = self.positive
            truth_values = np.empty(len(truths), dtype=object)
            truth_values[:] = truths
            predicted = np.fromiter(
                (p == positive for p in predicted_values), dtype=np.bool_, count=len(slots)
            )
            truth = np.fromiter((t == positive for t in truths), dtype=np.bool_, count=len(slots))
            correct = np.fromiter(
                (p == t for p, t in zip(predicted_values, truths, strict=True)),
                dtype=np.bool_,
                count=len(slots),
            )
            for code in np.unique(codes).tolist():
                mask = codes == code
                window = self._windows.get(code)
                if window is None:
                    window = self._windows[code] = _Window(self.window)
                window.extend(truth[mask], predicted[mask], correct[mask], scores[mask])
            return len(slots)

    # -- reading -------------------------------------------------------------------

    def report(self) -> dict[str, AccuracyReport]:
        """Rolling metrics per release that has joined labels."""
        with self._lock:
            return {
                self._releases[code]: window.report(self._releases[code], n_bins=self.n_bins)
                for code, window in self._windows.items()
            }

    def stats(self) -> JoinStats:
        """The join counters (expiring what is due first)."""
        with self._lock:
            self._expire(self._clock())
            return JoinStats(
                pending=len(self._index) + self._unindexed,
                joined=self._joined,
                expired=self._expired,
                evicted=self._evicted,
                late=self._late,
                unknown=self._unknown,
                invalid=self._invalid,
            )


_INVALID = object()


def _ranges(start: int, n: int, cap: int) -> Iterator[tuple[int, int]]:
    """The contiguous ``[lo, hi)`` slot ranges of `n` ring slots from `start`."""
    first = min(n, cap - start)
    yield start, start + first
    if first < n:
        yield 0, n - first


def _label_table(positive: Any, classes: Sequence[Any] | None) -> dict[Any, Any] | None:
    """Label value (or its text) -> prediction value; None accepts labels as given."""
    if classes is None:
        return None
    values = list(classes)
    if positive not in values:
        raise ValueError(
            f"positive class {positive!r} is not one of the classes {values!r}: name one of them"
        )
    table: dict[Any, Any] = {}
    if len(values) == 2:
        for i, value in enumerate(values):
            table[f"{i}"] = value
            table[("true", "false")[1 - i]] = value
    for value in values:
        table[str(value)] = value
    return table


def _lookup(table: dict[Any, Any] | None, label: Any) -> Any:
    if table is None:
        return _INVALID if label is None else label
    if isinstance(label, bool):
        key = "true" if label else "false"
    elif isinstance(label, float) and math.isfinite(label) and label.is_integer():
        key = str(int(label))
    elif isinstance(label, str):
        key = label.lower() if label.lower() in _BOOLS else label
    elif isinstance(label, int):
        key = str(label)
    else:
        return _INVALID
    return table.get(key, _INVALID)


_BOOLS = frozenset({"true", "false"})
