"""One drift check: every column of a window against the reference, one verdict each.

Numeric columns get the two-sample KS test (and PSI over the reference's deciles),
categorical ones chi-square, and so do booleans (a numeric reference column holding only
0 and 1, `boolean_columns`): KS on two values only compares their shares, with a p-value
made for continuous data, while chi-square on the two counts is the test for them. The
p-values are corrected across columns together, so ``alpha`` bounds the false alarms of
the whole check, not of each column. Optionally the model's scores (prediction drift:
Jensen-Shannon distance and KS) and an MMD test of all numeric columns at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from headrace.errors import DriftError
from headrace.monitoring.drift.correction import Correction, adjust_pvalues
from headrace.monitoring.drift.distances import (
    chi_square,
    jensen_shannon,
    population_stability_index,
)
from headrace.monitoring.drift.ks import KSMethod, SortedColumns, ks_pvalues, ks_statistics
from headrace.monitoring.drift.mmd import MMDResult, mmd_test
from headrace.monitoring.drift.reference import DriftReference, _as_float, column_kind

__all__ = [
    "DEFAULT_ALPHA",
    "JS_THRESHOLD",
    "ColumnDrift",
    "DriftReport",
    "PredictionDrift",
    "boolean_columns",
    "boolean_counts",
    "check_drift",
    "window_bin_counts",
]

DEFAULT_ALPHA = 0.05
"""Chance of a false alarm per check (family-wise with Bonferroni)."""
JS_THRESHOLD = 0.1
"""Jensen-Shannon distance of the scores above which predictions count as drifted."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """The verdict on one column."""

    column: str
    kind: str
    test: str
    statistic: float
    p_value: float
    adjusted_p_value: float
    drifted: bool
    psi: float
    reference_rows: int
    current_rows: int


@dataclass(frozen=True, slots=True)
class PredictionDrift:
    """Drift of the model's scores: JS distance between histograms, and KS."""

    js_distance: float
    ks_statistic: float
    p_value: float
    threshold: float
    drifted: bool


@dataclass(frozen=True, slots=True)
class DriftReport:
    """The result of `check_drift`: a row per column, plus the optional extras."""

    columns: tuple[ColumnDrift, ...]
    alpha: float
    correction: str
    method: str
    reference: str
    current_rows: int
    skipped: tuple[str, ...] = ()
    prediction: PredictionDrift | None = None
    multivariate: MMDResult | None = None

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        """Names of the columns whose corrected p-value is at most alpha."""
        return tuple(c.column for c in self.columns if c.drifted)

    @property
    def drifted(self) -> bool:
        """Whether any column, the scores or the multivariate test drifted."""
        return (
            bool(self.drifted_columns)
            or (self.prediction is not None and self.prediction.drifted)
            or (self.multivariate is not None and self.multivariate.p_value <= self.alpha)
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``: NaN becomes None."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not np.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            return value

        data: dict[str, Any] = clean(
            {
                "drifted": self.drifted,
                "drifted_columns": list(self.drifted_columns),
                "alpha": self.alpha,
                "correction": self.correction,
                "method": self.method,
                "reference": self.reference,
                "current_rows": self.current_rows,
                "columns": [asdict(c) for c in self.columns],
                "skipped": list(self.skipped),
                "prediction": None if self.prediction is None else asdict(self.prediction),
                "multivariate": None if self.multivariate is None else asdict(self.multivariate),
            }
        )
        return data


def window_bin_counts(
    positions: FloatArray, counts: npt.NDArray[np.int64], starts: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Window counts per reference-decile bin, from the KS search positions.

    `positions` (columns x rows, sorted within each column) are how many reference
    values lie below each sorted window value; a value is in bin i when that number
    reaches ``starts[i]``. Offsetting each column into its own range makes the whole
    array sorted, so one search of the few bin starts into it bins every column.
    """
    columns, rows = positions.shape
    bins = starts.shape[1]
    if columns == 0 or rows == 0:
        return np.zeros((columns, bins), dtype=np.int64)
    stride = float(max(positions.max(), starts.max()) + 1)
    offsets = np.arange(columns, dtype=np.float64)[:, None] * stride
    keys = (positions + offsets).ravel()
    at_or_above = np.searchsorted(keys, (starts + offsets).ravel(), side="left").reshape(
        columns, bins
    )
    ends = np.concatenate([at_or_above[:, 1:], (np.arange(1, columns + 1) * rows)[:, None]], axis=1)
    binned = (ends - at_or_above).astype(np.int64)
    # Missing values sort last and search to the end of the reference: in the last bin.
    binned[:, -1] -= rows - counts
    return binned


def _is_boolean(values: FloatArray) -> bool:
    """Sorted non-missing reference values that are all 0 or 1 (at least one of each
    kind is not needed: a flag never set in the reference is still a flag)."""
    return (
        values.size > 0
        and values[0] >= 0.0
        and values[-1] <= 1.0
        and bool(np.all((values == 0.0) | (values == 1.0)))
    )


def boolean_columns(reference: DriftReference) -> list[str]:
    """The reference's numeric columns that hold only 0 and 1 (booleans, flags)."""
    return [n for n in reference.numeric_names if _is_boolean(reference.numeric_values(n))]


def boolean_counts(
    reference: DriftReference, column: str, values: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``[false, true]`` counts of a boolean column in the reference and in `values`
    (missing values left out; a value other than 0 and 1 counts as true, as in Python)."""
    ref = reference.numeric_values(column)
    ones = int(ref.size - np.searchsorted(ref, 0.5))
    cur = _as_float(np.asarray(values))
    cur = cur[~np.isnan(cur)]
    true = int(np.count_nonzero(cur))
    return (
        np.array([ref.size - ones, ones], dtype=np.int64),
        np.array([cur.size - true, true], dtype=np.int64),
    )


def check_drift(
    reference: DriftReference,
    current: Mapping[str, npt.ArrayLike],
    *,
    scores: npt.ArrayLike | None = None,
    alpha: float = DEFAULT_ALPHA,
    correction: Correction = "bonferroni",
    method: KSMethod = "auto",
    multivariate: bool = False,
    psi: bool = True,
    seed: int = 0,
) -> DriftReport:
    """Test every column `current` shares with `reference`; one corrected verdict each.

    Parameters
    ----------
    current
        Column name -> 1-D values of the window (numpy, as the stream worker batches
        them). Columns the reference lacks are listed in ``skipped``.
    scores
        The model's scores on the window, tested against ``reference.scores``.
    alpha
        False-alarm level of the whole check after `correction`.
    method
        KS p-values: ``auto``, ``exact`` or ``asymp`` (see `ks_pvalues`).
    multivariate
        Also run the MMD permutation test over the numeric columns (slower: ~0.1 s).

    Raises
    ------
    DriftError
        No column in common, a column numeric on one side and categorical on the other,
        or columns of different lengths.
    """
    if not 0.0 < alpha < 1.0:
        raise DriftError(f"alpha must be between 0 and 1, got {alpha}.")
    arrays = {name: np.asarray(values) for name, values in current.items()}
    lengths = {name: values.shape for name, values in arrays.items()}
    if len({shape for shape in lengths.values()}) > 1:
        raise DriftError(f"Window columns differ in length: {lengths}. Give equal-length columns.")
    rows = next(iter(lengths.values()))[0] if lengths else 0
    numeric = [n for n in reference.numeric_names if n in arrays]
    categorical = [n for n in reference.categorical_names if n in arrays]
    skipped = tuple(n for n in arrays if reference.kind(n) is None)
    if not numeric and not categorical:
        raise DriftError(
            f"No common columns: the window has {sorted(arrays)[:10]}, the reference "
            f"({reference.source}) has {list(reference.columns)[:10]}. Check both files "
            "describe the same data."
        )
    for name in numeric + categorical:
        expected = reference.kind(name)
        actual = column_kind(arrays[name])
        if actual != expected:
            raise DriftError(
                f"Column '{name}' is {expected} in the reference ({reference.source}) but "
                f"{actual} ({arrays[name].dtype}) in the window. Give it the same type on "
                "both sides."
            )
    results: list[tuple[str, str, str, float, float, float, int, int]] = []
    flags = set(boolean_columns(reference)) & set(numeric)
    ks_columns = [n for n in numeric if n not in flags]
    if ks_columns:
        index = [reference.position(n) for n in ks_columns]
        subset = (
            reference.sorted
            if index == list(range(len(reference.numeric_names)))
            else SortedColumns([reference.sorted.views[i] for i in index])
        )
        window = np.column_stack([_as_float(arrays[n]) for n in ks_columns])
        stats, counts, positions = ks_statistics(subset, window)
        sizes = subset.sizes
        p = ks_pvalues(stats, sizes, counts, method=method)
        psi_values = np.full(len(ks_columns), np.nan)
        if psi:
            starts = reference.bin_starts[index]
            window_counts = window_bin_counts(positions, counts, starts)
            psi_values = population_stability_index(reference.bin_counts[index], window_counts)
        for j, name in enumerate(ks_columns):
            results.append(
                (name, "numeric", "ks", float(stats[j]), float(p[j]), float(psi_values[j]),
                 int(sizes[j]), int(counts[j]))
            )  # fmt: skip
    for name in [n for n in numeric if n in flags]:
        ref_counts, cur_counts = boolean_counts(reference, name, arrays[name])
        stat, p_flag, _dof = chi_square(ref_counts, cur_counts)
        psi_flag = population_stability_index(ref_counts, cur_counts) if psi else [np.nan]
        results.append(
            (name, "boolean", "chi2", float(stat[0]), float(p_flag[0]), float(psi_flag[0]),
             int(ref_counts.sum()), int(cur_counts.sum()))
        )  # fmt: skip
    for name in categorical:
        ref_counts, cur_counts, _ = reference.count_categories(name, arrays[name])
        stat, p_cat, _dof = chi_square(ref_counts, cur_counts)
        psi_cat = population_stability_index(ref_counts, cur_counts) if psi else [np.nan]
        results.append(
            (name, "categorical", "chi2", float(stat[0]), float(p_cat[0]), float(psi_cat[0]),
             int(ref_counts.sum()), int(cur_counts.sum()))
        )  # fmt: skip
    adjusted = adjust_pvalues([r[4] for r in results], correction=correction)
    columns = tuple(
        ColumnDrift(
            column=name,
            kind=kind,
            test=test,
            statistic=stat,
            p_value=p_value,
            adjusted_p_value=float(adj),
            drifted=bool(adj <= alpha),
            psi=psi_value,
            reference_rows=ref_rows,
            current_rows=cur_rows,
        )
        for (name, kind, test, stat, p_value, psi_value, ref_rows, cur_rows), adj in zip(
            results, adjusted, strict=True
        )
    )
    prediction = None
    if scores is not None and reference.scores is not None:
        prediction = _prediction_drift(reference, scores, alpha=alpha, method=method)
    mmd = None
    if multivariate and numeric and reference.sample is not None:
        index = [reference.position(n) for n in numeric]
        mmd = mmd_test(
            reference.sample[:, index],
            np.column_stack([_as_float(arrays[n]) for n in numeric]),
            seed=seed,
        )
    return DriftReport(
        columns=columns,
        alpha=alpha,
        correction=correction,
        method=method,
        reference=reference.source,
        current_rows=rows,
        skipped=skipped,
        prediction=prediction,
        multivariate=mmd,
    )


def _prediction_drift(
    reference: DriftReference, scores: npt.ArrayLike, *, alpha: float, method: KSMethod
) -> PredictionDrift:
    if reference.scores is None or reference.score_bin_starts is None:
        raise DriftError(f"The reference ({reference.source}) has no scores to compare with.")
    window = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    stats, counts, positions = ks_statistics(reference.scores, window)
    p = ks_pvalues(stats, reference.scores.sizes, counts, method=method)
    ref_counts = _reference_bin_counts(reference.scores.views[0], reference.score_bin_starts[0])
    cur_counts = window_bin_counts(positions, counts, reference.score_bin_starts)
    distance = float(jensen_shannon(ref_counts, cur_counts[0])[0])
    return PredictionDrift(
        js_distance=distance,
        ks_statistic=float(stats[0]),
        p_value=float(p[0]),
        threshold=JS_THRESHOLD,
        drifted=bool(distance > JS_THRESHOLD),
    )


def _reference_bin_counts(ref: FloatArray, starts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    ranks = np.searchsorted(ref, ref, side="left")
    return np.bincount(np.searchsorted(starts, ranks, side="right") - 1, minlength=starts.size)
