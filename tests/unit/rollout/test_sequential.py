"""Each e-value and confidence sequence against a direct computation of its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats
from scipy.spatial import distance

from headrace.rollout.sequential import (
    beta_mixture_log_evalue,
    binned_log_evalue,
    boundary_scale,
    histogram_quantile_bounds,
    jensen_shannon,
    msprt_log_evalue,
    normal_mixture_cs,
    quantile_cs_ranks,
)


def test_boundary_scale_matches_the_reference_values() -> None:
    # ROLLOUT-JUDGE.md 2a: c ~ 6.3 one-sided (alpha' = 0.1) and ~ 7.9 two-sided at 0.05.
    assert boundary_scale(0.1) == pytest.approx(2 * math.log(10) + math.log(1 + 2 * math.log(10)))
    assert round(boundary_scale(0.1), 1) == 6.3
    assert round(boundary_scale(0.05), 1) == 7.9
    with pytest.raises(ValueError, match="alpha must be in"):
        boundary_scale(1.5)


@given(
    delta=st.floats(-0.05, 0.05),
    p=st.floats(0.01, 0.5),
    n=st.integers(10, 100_000),
    tau=st.floats(1e-3, 0.1),
)
def test_two_sided_msprt_is_joharis_closed_form(delta: float, p: float, n: int, tau: float) -> None:
    """With equal arms, Johari et al.'s form sqrt(V/(V+n tau2)) exp(n^2 tau2 d^2/(2V(V+n tau2)))."""
    v = 2 * p * (1 - p)
    tau2 = tau * tau
    expected = 0.5 * math.log(v / (v + n * tau2)) + n * n * tau2 * delta * delta / (
        2 * v * (v + n * tau2)
    )
    got = msprt_log_evalue(delta, v / n, tau2=tau2, one_sided=False)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("estimate", "variance", "tau2", "null"),
    [
        (0.01, 1e-5, 1e-4, 0.0),
        (0.004, 2e-6, 5e-5, 0.001),
        (-0.002, 1e-5, 1e-4, 0.0),
        (0.3, 0.01, 0.02, 0.1),
    ],
)
def test_one_sided_msprt_is_the_half_normal_mixture(
    estimate: float, variance: float, tau2: float, null: float
) -> None:
    """The Gaussian likelihood ratio integrated over a half-normal on harmful effects."""
    s, tau = math.sqrt(variance), math.sqrt(tau2)

    def integrand(theta: float) -> float:
        ratio = stats.norm.pdf(estimate, theta, s) / stats.norm.pdf(estimate, null, s)
        return ratio * 2 * stats.norm.pdf(theta, null, tau)

    direct, _ = integrate.quad(integrand, null, null + 12 * tau, points=[estimate], limit=200)
    got = math.exp(msprt_log_evalue(estimate, variance, tau2=tau2, null=null))
    assert got == pytest.approx(direct, rel=1e-6)


@given(est=st.floats(-1, 1), var=st.floats(1e-8, 1e-2), tau2=st.floats(1e-8, 1e-2))
def test_cs_edges_are_where_the_two_sided_msprt_reaches_one_over_alpha(
    est: float, var: float, tau2: float
) -> None:
    low, high = normal_mixture_cs(est, var, tau2=tau2, alpha=0.05)
    for edge in (low, high):
        log_e = msprt_log_evalue(est, var, tau2=tau2, null=edge, one_sided=False)
        assert log_e == pytest.approx(math.log(20), abs=1e-6)


@given(
    est=st.floats(-10, 10),
    var=st.floats(0, 10),
    tau2=st.floats(0, 10),
    null=st.floats(-10, 10),
)
def test_log_evalues_are_numbers(est: float, var: float, tau2: float, null: float) -> None:
    """E-values are nonnegative: their logs are never NaN (an empty arm gives 0)."""
    assert not math.isnan(msprt_log_evalue(est, var, tau2=tau2, null=null))


def test_quantile_ranks_follow_the_boundary() -> None:
    n, p, alpha, horizon = 5000, 0.99, 0.01, 50_000
    rho = horizon * p * (1 - p) / boundary_scale(alpha)
    v = n * p * (1 - p)
    u = math.sqrt((v + rho) * (math.log(1 + v / rho) + 2 * math.log(1 / alpha)))
    low, high = quantile_cs_ranks(n, p, alpha=alpha, horizon=horizon)
    assert low == math.ceil(n * p - u)
    assert high is None if math.floor(n * p + u) + 1 > n else high == math.floor(n * p + u) + 1
    assert quantile_cs_ranks(0, 0.5, alpha=0.05, horizon=100) == (None, None)


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3000), p=st.sampled_from([0.5, 0.9, 0.99]))
def test_histogram_bounds_contain_the_raw_order_statistic_bounds(
    seed: int, n: int, p: float
) -> None:
    """Binning only widens: the histogram bounds bracket the exact order statistics."""
    rng = np.random.default_rng(seed)
    values = rng.lognormal(3, 1, n)
    edges = tuple(float(x) for x in np.geomspace(0.01, 60_000, 321))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=322)
    low, high = histogram_quantile_bounds(counts.tolist(), edges, p, alpha=0.01, horizon=10_000)
    low_rank, high_rank = quantile_cs_ranks(n, p, alpha=0.01, horizon=10_000)
    ordered = np.sort(values)
    assert low <= (ordered[low_rank - 1] if low_rank else 0.0)
    assert high >= (ordered[high_rank - 1] if high_rank else math.inf)


def test_quantile_cs_covers_the_median_of_a_stream() -> None:
    """Time-uniform coverage: over 400 streams of 3,000, the CS misses the median rarely."""
    rng = np.random.default_rng(7)
    data = rng.exponential(size=(400, 3000))
    median = math.log(2)
    below = np.cumsum(data < median, axis=1)
    n = np.arange(1, 3001)
    misses = 0
    alpha = 0.05
    for row in below:
        for t in range(99, 3000, 100):
            low, high = quantile_cs_ranks(int(n[t]), 0.5, alpha=alpha, horizon=3000)
            # median < X_(low) iff fewer than `low` observations lie below it
            if (low is not None and row[t] < low) or (high is not None and row[t] >= high):
                misses += 1
                break
    assert misses <= stats.binom.ppf(0.999, 400, alpha)


@given(
    c=st.lists(st.integers(0, 500), min_size=10, max_size=10),
    b=st.lists(st.integers(0, 500), min_size=10, max_size=10),
    rho=st.floats(0.01, 0.99),
)
def test_binned_evalue_is_the_beta_binomial_bayes_factor(
    c: list[int], b: list[int], rho: float
) -> None:
    k = 100.0
    direct = sum(
        special.betaln(k * rho + cj, k * (1 - rho) + bj)
        - special.betaln(k * rho, k * (1 - rho))
        - cj * math.log(rho)
        - bj * math.log(1 - rho)
        for cj, bj in zip(c, b, strict=True)
    )
    assert binned_log_evalue(c, b, rho=rho) == pytest.approx(direct, rel=1e-9, abs=1e-9)


def test_binned_evalue_over_steps_is_the_product_of_steps() -> None:
    c = [[3, 5, 2], [30, 40, 20]]
    b = [[60, 90, 50], [90, 120, 70]]
    both = binned_log_evalue(c, b, rho=np.asarray([0.05, 0.25]))
    apart = binned_log_evalue(c[0], b[0], rho=0.05) + binned_log_evalue(c[1], b[1], rho=0.25)
    assert both == pytest.approx(apart)


def test_binned_evalue_is_a_martingale_under_the_null() -> None:
    """Mean of E over many null draws is about 1 (it is a likelihood ratio)."""
    rng = np.random.default_rng(3)
    rho, n, bins = 0.25, 400, 5
    values = []
    for _ in range(4000):
        labels = rng.random(n) < rho
        bin_of = rng.integers(0, bins, n)
        c = np.bincount(bin_of[labels], minlength=bins)
        b = np.bincount(bin_of[~labels], minlength=bins)
        values.append(math.exp(binned_log_evalue(c, b, rho=rho)))
    assert np.mean(values) == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize(
    ("x", "n", "null"), [(0, 10, 0.01), (5, 100, 0.01), (40, 1000, 0.02), (300, 1000, 0.2)]
)
def test_beta_mixture_is_the_truncated_prior_integral(x: int, n: int, null: float) -> None:
    def ratio(q: float) -> float:
        return math.exp(x * math.log(q / null) + (n - x) * math.log((1 - q) / (1 - null)))

    direct, _ = integrate.quad(ratio, null, 1, points=[x / n] if x / n > null else None, limit=200)
    direct /= 1 - null  # the uniform prior truncated to (null, 1)
    assert math.exp(beta_mixture_log_evalue(x, n, null=null)) == pytest.approx(direct, rel=1e-6)


def test_beta_mixture_rejects_a_bad_null() -> None:
    with pytest.raises(ValueError, match="null must be in"):
        beta_mixture_log_evalue(1, 10, null=0.0)


@given(
    p=st.lists(st.integers(0, 1000), min_size=10, max_size=10).filter(lambda v: sum(v) > 0),
    q=st.lists(st.integers(0, 1000), min_size=10, max_size=10).filter(lambda v: sum(v) > 0),
)
def test_jensen_shannon_is_scipys_distance_squared(p: list[int], q: list[int]) -> None:
    expected = distance.jensenshannon(p, q, base=2) ** 2
    assert jensen_shannon(p, q) == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= jensen_shannon(p, q) <= 1.0 + 1e-12
