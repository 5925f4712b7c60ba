"""Multiple-test correction: one verdict per column without one false alarm per column.

Testing 20 columns at 5% each flags at least one of them in about 64% of windows with no
drift at all. Bonferroni bounds the chance of any false flag by alpha (the default: it
answers "did anything drift?"); Benjamini-Hochberg bounds the expected share of false
flags among the flagged columns (more power when many columns drift together).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Correction", "adjust_pvalues"]

Correction = Literal["bonferroni", "bh", "none"]
"""``bonferroni`` (family-wise error), ``bh`` (Benjamini-Hochberg false discovery rate)
or ``none`` (each column at alpha, as tools without correction do)."""


def adjust_pvalues(
    p_values: npt.ArrayLike, *, correction: Correction = "bonferroni"
) -> npt.NDArray[np.float64]:
    """Adjusted p-values: a column drifted at level alpha iff its adjusted p <= alpha.

    NaN p-values (columns that could not be tested) stay NaN and do not count as tests.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    m = int(tested.sum())
    if m == 0:
        return out
    values = p[tested]
    if correction == "none":
        adjusted = values
    elif correction == "bonferroni":
        adjusted = np.minimum(values * m, 1.0)
    elif correction == "bh":
        order = np.argsort(values, kind="stable")
        ranked = values[order] * m / np.arange(1, m + 1)
        # Step-up: each adjusted p is the smallest ranked value at or after it.
        monotone = np.minimum.accumulate(ranked[::-1])[::-1]
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(monotone, 1.0)
    else:
        raise ValueError(f"Unknown correction {correction!r}: use 'bonferroni', 'bh' or 'none'")
    out[tested] = adjusted
    return out
