"""The reference side of every drift test, prepared once: sorted values, bins, counts.

Built from columns (numpy arrays, as the stream worker holds them), from a table (a
Parquet or CSV file, for ``headrace drift check``), or from a release: its reference
profile (category counts over the full training data) and its seeded sample of rows
(the numeric values the KS and MMD tests compare against).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from headrace.errors import DriftError
from headrace.monitoring.drift.ks import SortedColumns

if TYPE_CHECKING:
    from headrace.registry.store import Registry, Release

__all__ = [
    "NUMERIC_BINS",
    "OTHER_CATEGORY",
    "ColumnKind",
    "DriftReference",
    "column_kind",
    "columns_from_table",
]

NUMERIC_BINS = 10
"""Bins per numeric column for PSI and the report: cut at the reference's deciles."""
OTHER_CATEGORY = "__other__"
"""A release profile's bucket for its rarest categories; unseen values go there too."""
UNSEEN_CATEGORY = "(unseen)"

ColumnKind = Literal["numeric", "categorical"]
"""Numeric columns get KS (and PSI over decile bins); categorical ones chi-square."""

FloatArray = npt.NDArray[np.float64]


def column_kind(values: npt.NDArray[Any]) -> ColumnKind:
    """Numbers, booleans and timestamps are numeric; strings and objects categorical."""
    return "numeric" if values.dtype.kind in "biufmM" else "categorical"


def _as_float(values: npt.NDArray[Any]) -> FloatArray:
    if values.dtype.kind in "mM":
        stamps = values.astype("datetime64[us]") if values.dtype.kind == "M" else values
        as_int = stamps.astype(np.int64).astype(np.float64)
        as_int[np.isnat(values)] = np.nan
        return as_int
    return np.asarray(values, dtype=np.float64)


def columns_from_table(table: Any) -> dict[str, npt.NDArray[Any]]:
    """A pyarrow table as numpy columns: numeric ones float64 (null as NaN), others
    object arrays of strings (null as None)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, npt.NDArray[Any]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
            kind = kind.value_type
        if pa.types.is_boolean(kind):
            column = column.cast(pa.int8())
            kind = pa.int8()
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            micros = column.cast(pa.timestamp("us")).cast(pa.int64())
            out[name] = micros.to_numpy(zero_copy_only=False).astype(np.float64)
            out[name][np.asarray(micros.is_null())] = np.nan
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            as_float = column.cast(pa.float64()).fill_null(np.nan)
            out[name] = np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)
        else:
            text = pc.cast(column, pa.string())
            out[name] = np.asarray(text.to_pylist(), dtype=object)
    return out


def _rank_bins(ref: FloatArray, bins: int) -> npt.NDArray[np.int64]:
    """Bin starts as reference ranks: bin i holds the values with at least `starts[i]`
    reference values below them. Cut at the deciles, by rank, so a window's bins come
    from the KS search positions for free."""
    if ref.size == 0:
        return np.zeros(bins, dtype=np.int64)
    cuts = ref[(np.arange(1, bins) * ref.size) // bins]
    return np.concatenate([[0], np.searchsorted(ref, cuts, side="left")]).astype(np.int64)


@dataclass(frozen=True, eq=False)
class DriftReference:
    """What the window is compared with, per column.

    Parameters
    ----------
    numeric
        Column name -> 1-D values (NaN = missing) of each numeric column.
    categorical
        Column name -> counts per category of each categorical column.
    sample
        ``(rows, len(numeric))`` rows of the numeric columns together, for the
        multivariate test; None leaves it out.
    scores
        The model's scores on reference data, for prediction drift; optional.
    source
        Where the reference came from, for reports and alarms.
    """

    numeric_names: tuple[str, ...]
    sorted: SortedColumns
    numeric_nulls: npt.NDArray[np.int64]
    bin_starts: npt.NDArray[np.int64]
    bin_counts: npt.NDArray[np.int64]
    categorical_names: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    category_counts: tuple[npt.NDArray[np.int64], ...]
    sample: FloatArray | None
    scores: SortedColumns | None
    score_bin_starts: npt.NDArray[np.int64] | None
    source: str
    bins: int = NUMERIC_BINS
    _index: dict[str, tuple[ColumnKind, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        *,
        numeric: Mapping[str, npt.ArrayLike],
        categorical: Mapping[str, Mapping[str, int]] | None = None,
        sample: npt.ArrayLike | None = None,
        scores: npt.ArrayLike | None = None,
        source: str = "reference",
        bins: int = NUMERIC_BINS,
    ) -> DriftReference:
        """Sort the numeric columns, cut their bins, index the categories."""
        names = tuple(numeric)
        values = [np.asarray(numeric[n], dtype=np.float64).ravel() for n in names]
        nulls = np.array([int(np.isnan(v).sum()) for v in values], dtype=np.int64)
        ordered = SortedColumns(values)
        starts = (
            np.stack([_rank_bins(v, bins) for v in ordered.views])
            if names
            else (np.zeros((0, bins), dtype=np.int64))
        )
        counts = np.zeros((len(names), bins), dtype=np.int64)
        for j, ref in enumerate(ordered.views):
            if ref.size:
                ranks = np.searchsorted(ref, ref, side="left")
                counts[j] = np.bincount(
                    np.searchsorted(starts[j], ranks, side="right") - 1, minlength=bins
                )
        cats = dict(categorical or {})
        cat_names = tuple(cats)
        categories = tuple(tuple(str(k) for k in cats[n]) for n in cat_names)
        cat_counts = tuple(np.array(list(cats[n].values()), dtype=np.int64) for n in cat_names)
        sample_array = None
        if sample is not None and names:
            sample_array = np.asarray(sample, dtype=np.float64)
            if sample_array.ndim != 2 or sample_array.shape[1] != len(names):
                raise DriftError(
                    f"Reference sample has shape {sample_array.shape}, expected (rows, "
                    f"{len(names)}) for the numeric columns {list(names)}."
                )
        score_sorted = score_starts = None
        if scores is not None:
            score_sorted = SortedColumns([np.asarray(scores, dtype=np.float64).ravel()])
            score_starts = _rank_bins(score_sorted.views[0], bins)[None, :]
        index: dict[str, tuple[ColumnKind, int]] = {n: ("numeric", i) for i, n in enumerate(names)}
        index.update({n: ("categorical", i) for i, n in enumerate(cat_names)})
        return cls(
            numeric_names=names,
            sorted=ordered,
            numeric_nulls=nulls,
            bin_starts=starts,
            bin_counts=counts,
            categorical_names=cat_names,
            categories=categories,
            category_counts=cat_counts,
            sample=sample_array,
            scores=score_sorted,
            score_bin_starts=score_starts,
            source=source,
            bins=bins,
            _index=index,
        )

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, npt.ArrayLike],
        *,
        scores: npt.ArrayLike | None = None,
        source: str = "reference",
        sample_rows: int = 1000,
        seed: int = 0,
    ) -> DriftReference:
        """From reference data held as columns; categorical ones are counted here.

        A seeded sample of `sample_rows` rows of the numeric columns is kept for the
        multivariate test.
        """
        numeric: dict[str, FloatArray] = {}
        categorical: dict[str, dict[str, int]] = {}
        for name, raw in columns.items():
            values = np.asarray(raw)
            if values.ndim != 1:
                raise DriftError(
                    f"Reference column '{name}' has shape {values.shape}; give 1-D columns."
                )
            if column_kind(values) == "numeric":
                numeric[name] = _as_float(values)
            else:
                categorical[name] = _count_categories(values)
        sample = None
        if numeric:
            matrix = np.column_stack(list(numeric.values()))
            rows = matrix.shape[0]
            if rows > sample_rows:
                pick = np.sort(np.random.default_rng(seed).choice(rows, sample_rows, replace=False))
                matrix = matrix[pick]
            sample = matrix
        return cls.build(
            numeric=numeric, categorical=categorical, sample=sample, scores=scores, source=source
        )

    @classmethod
    def from_table(cls, table: Any, *, source: str = "reference") -> DriftReference:
        """From a pyarrow table (a reference file)."""
        return cls.from_columns(columns_from_table(table), source=source)

    @classmethod
    def from_release(
        cls, registry: Registry, release: Release, *, scores: npt.ArrayLike | None = None
    ) -> DriftReference:
        """From a release's reference profile and sample (fetched and sha256-checked).

        Category counts come from the profile (the full training data); numeric values
        from the sample, the rows the release keeps for exactly this.
        """
        import pyarrow.parquet as pq

        profile = release.manifest.profile
        if profile is None or not profile.columns:
            raise DriftError(
                f"Release {release.ref} has no reference profile: register it with "
                "--data TRAINING_FILE so drift has something to compare with."
            )
        sample_columns: dict[str, npt.NDArray[Any]] = {}
        if profile.sample is not None:
            root = registry.fetch(release)
            sample_columns = columns_from_table(pq.read_table(root / profile.sample.path))
        numeric: dict[str, FloatArray] = {}
        categorical: dict[str, dict[str, int]] = {}
        for name, column in profile.columns.items():
            if column.kind == "categorical":
                categorical[name] = dict(column.frequencies or {})
            elif name in sample_columns:
                numeric[name] = np.asarray(sample_columns[name], dtype=np.float64)
        if not numeric and not categorical:
            raise DriftError(
                f"Release {release.ref} keeps no reference sample for its numeric columns; "
                "re-register it with --data so its profile includes one."
            )
        sample = np.column_stack(list(numeric.values())) if numeric else None
        return cls.build(
            numeric=numeric,
            categorical=categorical,
            sample=sample,
            scores=scores,
            source=f"release {release.ref}",
        )

    # -- lookups ------------------------------------------------------------------------

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column, numeric first."""
        return self.numeric_names + self.categorical_names

    def kind(self, column: str) -> ColumnKind | None:
        """The kind of `column`, or None if the reference does not have it."""
        found = self._index.get(column)
        return None if found is None else found[0]

    def position(self, column: str) -> int:
        """Index of `column` among the reference's columns of its kind."""
        return self._index[column][1]

    def numeric_values(self, column: str) -> FloatArray:
        """The sorted non-missing reference values of a numeric column."""
        return self.sorted.views[self.position(column)]

    def category_table(self, column: str) -> dict[str, int]:
        """Reference counts per category of a categorical column."""
        i = self.position(column)
        return dict(zip(self.categories[i], self.category_counts[i].tolist(), strict=True))

    def count_categories(
        self, column: str, values: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], tuple[str, ...]]:
        """Reference and window counts over the same bins for a categorical column.

        Window values the reference never saw go to its ``__other__`` bucket when it has
        one, else to an ``(unseen)`` bin with a reference count of zero: a new category
        is evidence of drift, not noise to drop.
        """
        i = self.position(column)
        names = list(self.categories[i])
        ref = list(self.category_counts[i].tolist())
        lookup = {name: k for k, name in enumerate(names)}
        current = [0] * len(names)
        for value, count in _count_categories(np.asarray(values, dtype=object)).items():
            k = lookup.get(value)
            if k is None:
                k = lookup.get(OTHER_CATEGORY)
            if k is None:
                names.append(UNSEEN_CATEGORY)
                ref.append(0)
                current.append(0)
                k = lookup[UNSEEN_CATEGORY] = len(names) - 1
            current[k] += count
        return (
            np.array(ref, dtype=np.int64),
            np.array(current, dtype=np.int64),
            tuple(names),
        )


def _count_categories(values: npt.NDArray[Any]) -> dict[str, int]:
    """Counts of the non-missing values, as strings, most common first."""
    present = [v for v in values.tolist() if v is not None and v == v]  # v == v drops NaN
    if not present:
        return {}
    uniques, counts = np.unique(
        np.array([str(v) for v in present], dtype=object), return_counts=True
    )
    order = np.argsort(-counts, kind="stable")
    return {str(uniques[i]): int(counts[i]) for i in order}
