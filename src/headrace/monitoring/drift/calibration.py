"""Calibrating an online drift threshold for a target run length between false alarms.

A monitor that tests a sliding window every `stride` rows at a fixed p-value threshold
makes thousands of correlated tests: at p < 0.05 with 20 columns it cries wolf every few
windows. The threshold here is set instead for the quantity an operator cares about, the
expected number of rows between false alarms (the in-control average run length, ARL0).

The monitor's statistic is the largest ``sqrt(n1*n2/(n1+n2)) * D`` over columns (a KS
distance scaled so that columns of any size compare). Its null law depends on how the
columns move together and on the overlap of successive windows, so it is simulated:
streams with no drift are drawn from the reference's own rows (a bootstrap of the joint
sample, so correlations between columns are kept; continuous columns are jittered within
their rank so that no artificial ties appear), each against a pseudo-reference drawn the
same way, because the real reference is a sample too. Alarms come in clusters of
neighbouring windows, so the rate that matters is that of *upcrossings* of the threshold
per check, lambda; the run length is then about ``window + stride * (1/lambda - 1)``.
Where the simulation saw too few upcrossings at the target (a long target, a short
budget), the tail is extrapolated: log lambda is linear in the squared threshold, as the
Kolmogorov tail ``2 exp(-2 z^2)`` suggests, fitted on the simulated tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from headrace.errors import DriftError
from headrace.monitoring.drift.ks import SortedColumns, ks_statistics

__all__ = ["Calibration", "calibrate_threshold", "scaled_ks"]

MIN_UPCROSSINGS = 30
"""Upcrossings the simulation must see at the threshold to use it without extrapolating."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Calibration:
    """A calibrated threshold and how it was obtained (keep it to skip re-simulating)."""

    threshold: float
    window: int
    stride: int
    target_run_length: int
    checks: int
    upcrossings: int
    extrapolated: bool
    seed: int


def scaled_ks(
    reference: SortedColumns, window: FloatArray
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """``sqrt(n1*n2/(n1+n2)) * D`` per column (0 where a column is empty), with ``D``
    and the window counts."""
    stats, counts, _ = ks_statistics(reference, window)
    n1 = reference.sizes.astype(np.float64)
    n2 = counts.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(n1 * n2 / (n1 + n2))
    z = np.nan_to_num(stats * scale, nan=0.0)
    return z, stats, counts


def _null_rows(
    ranked: FloatArray, jitter: FloatArray, rows: int, rng: np.random.Generator
) -> FloatArray:
    """Bootstrap rows of the ranked sample; continuous columns jittered within a rank."""
    picked = ranked[rng.integers(0, ranked.shape[0], size=rows)]
    return picked + rng.uniform(-0.5, 0.5, size=picked.shape) * jitter


def _rank_space(sample: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Columns as ranks of their distinct values (KS depends on nothing else), and a
    jitter width per column: 1 for continuous columns (every value distinct), 0 where
    the data has ties of its own, which the simulation must keep."""
    out = np.empty_like(sample)
    jitter = np.zeros(sample.shape[1])
    for j in range(sample.shape[1]):
        column = sample[:, j]
        present = ~np.isnan(column)
        uniques, inverse = np.unique(column[present], return_inverse=True)
        out[~present, j] = np.nan
        out[present, j] = inverse.astype(np.float64)
        jitter[j] = 1.0 if uniques.size == np.count_nonzero(present) else 0.0
    return out, jitter


def calibrate_threshold(
    sample: npt.ArrayLike,
    reference_sizes: npt.ArrayLike,
    *,
    window: int,
    stride: int,
    target_run_length: int,
    checks: int = 4000,
    max_checks: int = 20_000,
    checks_per_stream: int = 200,
    seed: int = 0,
) -> Calibration:
    """The threshold on the largest scaled KS distance for a target ARL0 in rows.

    Parameters
    ----------
    sample
        ``(rows, columns)`` reference rows of the monitored columns, together (the
        release's reference sample); the simulated streams are drawn from them.
    reference_sizes
        Non-missing reference values per column (the real reference may be larger than
        the sample; the pseudo-references match its sizes).
    window, stride
        The monitor's window length and check interval, in rows.
    target_run_length
        Expected rows between false alarms; must exceed `window`.
    checks, max_checks
        Simulated checks: at least `checks`, more (up to `max_checks`) until the target
        rate is seen at least `MIN_UPCROSSINGS` times; past that the tail is
        extrapolated, which errs high (fewer false alarms than the target). Each costs
        one KS check of a window: about 1 ms for 20 columns.
    """
    rows = np.asarray(sample, dtype=np.float64)
    sizes = np.asarray(reference_sizes, dtype=np.int64)
    if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] != sizes.size:
        raise DriftError(
            f"Calibration needs a (rows, {sizes.size}) reference sample of at least 2 rows, "
            f"got shape {rows.shape}."
        )
    if window < 2 or stride < 1:
        raise DriftError(f"window must be >= 2 and stride >= 1, got {window} and {stride}.")
    if target_run_length <= window:
        raise DriftError(
            f"target_run_length ({target_run_length} rows) must exceed the window "
            f"({window} rows): no alarm can come before the first full window."
        )
    rng = np.random.default_rng(seed)
    ranked, jitter = _rank_space(rows)
    per_stream = max(1, min(checks_per_stream, checks))
    length = window + (per_stream - 1) * stride
    rate = stride / (target_run_length - window + stride)
    wanted = min(max(checks, math.ceil(MIN_UPCROSSINGS / rate)), max(checks, max_checks))
    reference_rows = int(sizes.max()) if sizes.size else 0
    current: list[FloatArray] = []
    previous: list[FloatArray] = []
    while len(current) * per_stream < wanted:
        pseudo = _null_rows(ranked, jitter, reference_rows, rng)
        reference = SortedColumns([pseudo[: int(sizes[j]), j] for j in range(sizes.size)])
        stream = _null_rows(ranked, jitter, length, rng)
        z_max = np.empty(per_stream)
        for i in range(per_stream):
            end = window + i * stride
            z, _, _ = scaled_ks(reference, stream[end - window : end])
            z_max[i] = z.max() if z.size else 0.0
        current.append(z_max)
        previous.append(np.concatenate([[-np.inf], z_max[:-1]]))
    z_now = np.concatenate(current)
    z_before = np.concatenate(previous)
    total = z_now.size
    # An upcrossing of c at check i: z_before <= c < z_now. For every candidate c (the
    # observed values), count = #(z_now > c) - #(min(z_now, z_before) > c).
    both = np.sort(np.minimum(z_now, z_before))
    now_sorted = np.sort(z_now)
    candidates = now_sorted
    ups = (total - np.searchsorted(now_sorted, candidates, side="right")) - (
        total - np.searchsorted(both, candidates, side="right")
    )
    allowed = rate * total
    # Upcrossings are not monotone in c (below nearly every value only each stream's
    # first check crosses), so take the lowest c above which the rate stays allowed.
    too_many = np.flatnonzero(ups > allowed)
    first = int(too_many[-1]) + 1 if too_many.size else 0
    first = min(first, candidates.size - 1)
    threshold = float(candidates[first])
    observed = int(ups[first])
    extrapolated = observed < MIN_UPCROSSINGS and allowed < MIN_UPCROSSINGS
    if extrapolated:
        threshold = _extrapolate(candidates, ups / total, rate)
    return Calibration(
        threshold=threshold,
        window=window,
        stride=stride,
        target_run_length=target_run_length,
        checks=total,
        upcrossings=observed,
        extrapolated=extrapolated,
        seed=seed,
    )


def _extrapolate(thresholds: FloatArray, rates: npt.NDArray[np.float64], target: float) -> float:
    """Fit the simulated tail and solve it for the `target` upcrossing rate.

    The scaled KS distance has the Kolmogorov tail ``2 exp(-2 c^2)``; taking a maximum
    over columns and over overlapping windows changes the factor in front (a power of c
    times a constant, as Rice's formula has it), not the exponent. So only that factor
    is fitted: ``log(rate) + 2 c^2 = a + g log(c)``, on the thresholds whose rate the
    simulation measured from enough upcrossings.
    """
    total = thresholds.size
    floor = MIN_UPCROSSINGS / total
    # Only above the busiest threshold: below it upcrossings get rarer again (nearly
    # every check is above such a c, so few checks cross it from below).
    busiest = thresholds[int(np.argmax(rates))]
    tail = (rates >= floor) & (rates <= 0.2) & (thresholds > busiest)
    if np.count_nonzero(tail) < 5:
        raise DriftError(
            "Calibration saw too few threshold crossings to extrapolate: raise `checks` "
            "or lower target_run_length."
        )
    c = thresholds[tail]
    slope, intercept = np.polyfit(np.log(c), np.log(rates[tail]) + 2.0 * c**2, 1)
    goal = float(np.log(target))
    low, high = float(c.max()), float(c.max()) + 10.0

    def gap(value: float) -> float:
        return float(intercept + slope * math.log(value) - 2.0 * value**2 - goal)

    if gap(low) <= 0:
        return low
    for _ in range(100):  # bisection: the fitted log-rate falls steadily past the data
        middle = 0.5 * (low + high)
        if gap(middle) > 0:
            low = middle
        else:
            high = middle
    return high
