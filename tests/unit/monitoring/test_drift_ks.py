"""The vectorised KS test against scipy: same statistic, same p-values, every method."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from headrace.monitoring.drift import (
    EXACT_MAX_CELLS,
    SortedColumns,
    ks_exact_pvalue,
    ks_pvalues,
    ks_statistics,
)
from headrace.monitoring.drift.ks import _kolmogorov_sf, _smirnov_sf

SIZES = [(10_000, 1_000), (300, 200), (50, 70), (1_000, 1_000), (7, 9), (1, 5), (2_500, 40)]


def _samples(rng: np.random.Generator, n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """Six columns: continuous, shifted, scaled, rounded (ties), heavy-tailed, constant."""
    ref = rng.normal(size=(n1, 6))
    cur = rng.normal(size=(n2, 6))
    cur[:, 1] += 0.3
    cur[:, 2] *= 1.5
    ref[:, 3], cur[:, 3] = np.round(ref[:, 3]), np.round(cur[:, 3] + 0.2)
    ref[:, 4], cur[:, 4] = rng.standard_cauchy(n1), rng.standard_cauchy(n2)
    ref[:, 5], cur[:, 5] = 1.0, 1.0
    return ref, cur


@pytest.mark.parametrize(("n1", "n2"), SIZES)
def test_statistics_equal_scipy(rng: np.random.Generator, n1: int, n2: int) -> None:
    ref, cur = _samples(rng, n1, n2)
    d, counts, _ = ks_statistics(SortedColumns(list(ref.T)), cur)
    expected = [stats.ks_2samp(ref[:, j], cur[:, j]).statistic for j in range(6)]
    np.testing.assert_allclose(d, expected, rtol=1e-12, atol=0)
    assert counts.tolist() == [n2] * 6


@pytest.mark.parametrize(("n1", "n2"), SIZES)
def test_asymptotic_pvalues_equal_scipy(rng: np.random.Generator, n1: int, n2: int) -> None:
    ref, cur = _samples(rng, n1, n2)
    d, counts, _ = ks_statistics(SortedColumns(list(ref.T)), cur)
    p = ks_pvalues(d, n1, counts, method="asymp")
    expected = [stats.ks_2samp(ref[:, j], cur[:, j], method="asymp").pvalue for j in range(6)]
    np.testing.assert_allclose(p, expected, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize(("n1", "n2"), [s for s in SIZES if s[0] * s[1] <= EXACT_MAX_CELLS])
def test_exact_pvalues_equal_scipy(rng: np.random.Generator, n1: int, n2: int) -> None:
    ref, cur = _samples(rng, n1, n2)
    d, counts, _ = ks_statistics(SortedColumns(list(ref.T)), cur)
    p = ks_pvalues(d, n1, counts, method="exact")
    auto = ks_pvalues(d, n1, counts, method="auto")
    expected = [stats.ks_2samp(ref[:, j], cur[:, j], method="exact").pvalue for j in range(6)]
    # Unequal sizes: both compute 1 - P(inside the band), so p-values keep ~1e-12
    # absolute accuracy (the rounding of a thousand running sums), not relative.
    np.testing.assert_allclose(p, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(auto, p)


def test_missing_values_are_left_out_per_column(rng: np.random.Generator) -> None:
    ref = rng.normal(size=(500, 3))
    ref[::7, 0] = np.nan
    cur = rng.normal(0.2, 1.0, size=(300, 3))
    cur[::3, 1] = np.nan
    cur[:, 2] = np.nan
    d, counts, _ = ks_statistics(SortedColumns(list(ref.T)), cur)
    for j in range(2):
        a, b = ref[:, j], cur[:, j]
        expected = stats.ks_2samp(a[~np.isnan(a)], b[~np.isnan(b)]).statistic
        assert d[j] == pytest.approx(expected, rel=1e-12)
    assert counts.tolist() == [300, 200, 0]
    assert np.isnan(d[2])
    assert np.isnan(ks_pvalues(d, 500, counts)[2])


def test_kolmogorov_sf_matches_kstwo_in_every_regime() -> None:
    d = np.linspace(0.0005, 0.9995, 250)
    for n in (3, 60, 141, 909, 5_000, 150_000):
        ours = _kolmogorov_sf(d, np.full(d.shape, float(n)))
        np.testing.assert_allclose(ours, stats.kstwo.sf(d, n), rtol=1e-9, atol=1e-300)


def test_smirnov_tail_matches_scipy() -> None:
    for n in (150, 909, 12_000):
        d = np.linspace(np.sqrt(2.2 / n), 0.99, 300)
        np.testing.assert_allclose(
            _smirnov_sf(np.full(d.shape, float(n)), d),
            special.smirnov(n, d),
            rtol=1e-9,
            atol=1e-300,
        )


def test_exact_edge_cases() -> None:
    assert ks_exact_pvalue(0.0, 10, 20) == 1.0
    assert ks_exact_pvalue(1.0, 5, 5) == pytest.approx(stats.ks_2samp([0] * 5, [1] * 5).pvalue)
    with pytest.raises(ValueError, match="sample sizes must be positive"):
        ks_exact_pvalue(0.5, 0, 5)


def test_malformed_inputs_are_named() -> None:
    reference = SortedColumns([np.arange(5.0), np.arange(5.0)])
    with pytest.raises(ValueError, match="window has 3 columns, the reference 2"):
        ks_statistics(reference, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="Unknown KS method 'fast'"):
        ks_pvalues(np.array([0.1]), 10, 10, method="fast")  # type: ignore[arg-type]
