"""Count-based drift measures: chi-square, PSI and Jensen-Shannon.

All three compare two histograms over the same bins (categories, or numeric bins cut at
the reference's quantiles), so they share one input shape: a ``(columns, bins)`` count
matrix per side, and they work on every column of a window at once.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "PSI_EPSILON",
    "chi_square",
    "jensen_shannon",
    "population_stability_index",
]

PSI_EPSILON = 1e-4
"""Share given to an empty bin so that PSI stays finite (the common convention)."""

FloatArray = npt.NDArray[np.float64]


def _as_counts(counts: npt.ArrayLike) -> FloatArray:
    array = np.asarray(counts, dtype=np.float64)
    return array[None, :] if array.ndim == 1 else array


def chi_square(
    reference: npt.ArrayLike, current: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Pearson's chi-square test of homogeneity of two count vectors, per row.

    The 2 x k contingency test (``scipy.stats.chi2_contingency(..., correction=False)``)
    rather than a goodness-of-fit test against the reference shares: the reference is a
    sample too, and treating its shares as exact would overstate drift for small ones.
    Bins empty on both sides are left out of the degrees of freedom.

    Returns
    -------
    statistics, p_values, degrees_of_freedom
        One per row; the p-value is 1 (no evidence) where fewer than two bins are used.
    """
    from scipy import special

    ref = _as_counts(reference)
    cur = _as_counts(current)
    if ref.shape != cur.shape:
        raise ValueError(f"count shapes differ: {ref.shape} vs {cur.shape}")
    used = (ref + cur) > 0
    col_total = ref + cur
    ref_total = ref.sum(axis=1, keepdims=True)
    cur_total = cur.sum(axis=1, keepdims=True)
    grand = ref_total + cur_total
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_ref = col_total * ref_total / grand
        expected_cur = col_total * cur_total / grand
        terms = np.where(
            used,
            (ref - expected_ref) ** 2 / expected_ref + (cur - expected_cur) ** 2 / expected_cur,
            0,
        )
    statistic = np.nan_to_num(terms.sum(axis=1))
    dof = np.maximum(used.sum(axis=1) - 1, 0).astype(np.int64)
    empty = (ref_total[:, 0] == 0) | (cur_total[:, 0] == 0)
    p_value = np.where(
        (dof > 0) & ~empty, special.chdtrc(np.maximum(dof, 1), statistic), 1.0
    ).astype(np.float64)
    statistic[empty] = 0.0
    return statistic, p_value, dof


def population_stability_index(reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """PSI = sum((c - r) * ln(c / r)) over bins of shares, per row.

    Empty bins get a share of `PSI_EPSILON`. Usual reading: below 0.1 stable, 0.1 to
    0.25 a moderate shift, above 0.25 a major one.
    """
    ref = _as_counts(reference)
    cur = _as_counts(current)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.maximum(ref / ref.sum(axis=1, keepdims=True), PSI_EPSILON)
        c = np.maximum(cur / cur.sum(axis=1, keepdims=True), PSI_EPSILON)
        psi = ((c - r) * np.log(c / r)).sum(axis=1)
    return np.where(np.isfinite(psi), psi, np.nan)


def jensen_shannon(reference: npt.ArrayLike, current: npt.ArrayLike) -> FloatArray:
    """Jensen-Shannon distance (base 2, so in [0, 1]) between two histograms, per row.

    The square root of the divergence, as ``scipy.spatial.distance.jensenshannon``:
    symmetric, finite with empty bins, and a metric, so thresholds read the same way
    whichever side drifted.
    """
    ref = _as_counts(reference)
    cur = _as_counts(current)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = ref / ref.sum(axis=1, keepdims=True)
        q = cur / cur.sum(axis=1, keepdims=True)
        m = 0.5 * (p + q)
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    divergence = np.clip(0.5 * (kl_p + kl_q), 0.0, 1.0)
    return np.where(np.isfinite(divergence), np.sqrt(divergence), np.nan)
