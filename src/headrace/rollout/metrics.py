"""Per-metric sequential tests: each metric's rollback test, promotion bound and evidence.

`judge` asks every metric of the plan (`metrics_of`) for a `MetricResult` and decides
from them; each metric here keeps its own share ``alpha_m`` of the plan's alpha. The
formulas are in `headrace.rollout.sequential`; what is specific to rollouts lives here:
which statistic each metric uses, how evidence carries across canary steps (a product of
per-step e-values, or confidence sequences with alpha split over steps), and the
one-line reason a human reads.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from headrace.rollout.evidence import LATENCY_EDGES_MS, ArmEvidence, StepEvidence
from headrace.rollout.plan import RolloutPlan
from headrace.rollout.sequential import (
    beta_mixture_log_evalue,
    binned_log_evalue,
    boundary_scale,
    cumulative_quantile_bounds,
    jensen_shannon,
    msprt_log_evalue,
    normal_mixture_cs,
)

__all__ = ["JSD_ALARM", "MetricResult", "distribution_alarm", "evaluate", "metrics_of"]

JSD_ALARM = 0.1
"""The plug-in Jensen-Shannon divergence (base 2) above which a distribution alarm holds."""

_LATENCY_LEVELS = (0.5, 0.99)
_LOG_CAP = 700.0


class MetricResult(msgspec.Struct, kw_only=True):
    """One metric's answer at one look.

    Attributes
    ----------
    rejected
        Its rollback test rejected (harm beyond tolerance shown at its ``alpha_m``).
    noninferior
        Its promotion bound lies within tolerance (at the separate promotion alpha).
    margin
        How far past its threshold (log e-value over log threshold, or a bound ratio):
        the strongest rejection names a rollback.
    reason
        One line for a rollback on this metric.
    evidence
        JSON-able numbers: statistic, threshold, estimate, bounds, sample sizes.
    """

    rejected: bool
    noninferior: bool
    margin: float
    reason: str
    evidence: dict[str, Any]


def metrics_of(plan: RolloutPlan) -> tuple[str, ...]:
    """The metrics `plan` is judged on, in a frozen order (each gets ``alpha / len``)."""
    scores = bool(plan.score_edges) or plan.baseline_mean_score is not None
    if plan.strategy == "shadow":
        return ("error_rate", "latency", "disagreement") + (("score_diff",) if scores else ())
    return ("error_rate", "latency") + (("score_mean",) if scores else ())


def _horizon(plan: RolloutPlan, k: int) -> int:
    """The sample size step k is expected to reach: where each mixture is tuned tightest."""
    return plan.max_samples if k >= _last_step_of(plan) else plan.min_samples


@functools.lru_cache(maxsize=64)
def _last_step_of(plan: RolloutPlan) -> int:
    """`plan.last_step` (a canary's 100% step is never judged), cached: asked every look."""
    return plan.last_step


def _e(log_e: float) -> float:
    return math.exp(min(log_e, _LOG_CAP))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _rate_diff(
    base: ArmEvidence, cand: ArmEvidence, horizon: int, alpha: float
) -> tuple[float, float, float]:
    """Estimate, plug-in variance and mixture variance of the error rate difference."""
    if not base.events or not cand.events:
        return (0.0, 0.0, 0.0)
    p_c = (cand.errors + 0.5) / (cand.events + 1)
    p_b = (base.errors + 0.5) / (base.events + 1)
    v_c, v_b = p_c * (1 - p_c), p_b * (1 - p_b)
    variance = v_c / cand.events + v_b / base.events
    tau2 = boundary_scale(alpha) * (v_c + v_b) / horizon
    return (cand.error_rate - base.error_rate, variance, tau2)


def _error_rate(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> MetricResult:
    log_e = 0.0
    for k, ev in enumerate(steps):
        est, var, tau2 = _rate_diff(ev.baseline, ev.candidate, _horizon(plan, k), 2 * alpha_m)
        log_e += msprt_log_evalue(est, var, tau2=tau2, null=plan.error_tolerance)
    threshold = math.log(1 / alpha_m)
    current = steps[-1]
    base, cand = current.baseline, current.candidate
    est, var, tau2 = _rate_diff(base, cand, _horizon(plan, len(steps) - 1), alpha_m)
    low, high = normal_mixture_cs(est, var, tau2=tau2, alpha=alpha_m)
    rejected = log_e >= threshold
    return MetricResult(
        rejected=rejected,
        noninferior=high < plan.error_tolerance,
        margin=log_e / threshold,
        reason=f"candidate error rate {cand.error_rate:.1%} vs baseline {base.error_rate:.1%} "
        f"(e-value {_e(log_e):.3g} >= 1/alpha_m {1 / alpha_m:.1f}, "
        f"n={cand.events:,}/{base.events:,})",
        evidence={
            "test": "one-sided mSPRT, per-step product",
            "statistic": _e(log_e),
            "log_statistic": log_e,
            "threshold": 1 / alpha_m,
            "estimate": est,
            "lower": _finite(low),
            "upper": _finite(high),
            "tolerance": plan.error_tolerance,
            "baseline": base.error_rate,
            "candidate": cand.error_rate,
            "n": [base.events, cand.events],
        },
    )


_LOWER_EDGES = np.asarray((0.0, *LATENCY_EDGES_MS), dtype=np.float64)
_UPPER_EDGES = np.asarray((*LATENCY_EDGES_MS, math.inf), dtype=np.float64)


def _cumulative(arm: ArmEvidence) -> Any:
    return np.cumsum(np.asarray(arm.latency_counts, dtype=np.int64))


def _quantiles(
    cumulative: Any, asks: list[tuple[float, float]], horizon: int
) -> list[tuple[float, float]]:
    if not len(cumulative):
        return [(0.0, math.inf)] * len(asks)
    return cumulative_quantile_bounds(cumulative, _LOWER_EDGES, _UPPER_EDGES, asks, horizon=horizon)


def _point(cumulative: Any, p: float) -> float | None:
    """The plug-in p-quantile (ms): the geometric middle of the bin holding rank ceil(np)."""
    if not len(cumulative) or not cumulative[-1]:
        return None
    rank = max(1, math.ceil(int(cumulative[-1]) * p))
    index = int(np.searchsorted(cumulative, rank))
    low, high = float(_LOWER_EDGES[index]), float(_UPPER_EDGES[index])
    if low <= 0.0:
        return high
    return low if not math.isfinite(high) else math.sqrt(low * high)


def _latency(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> MetricResult:
    current = steps[-1]
    base, cand = current.baseline, current.candidate
    horizon = _horizon(plan, len(steps) - 1)
    alpha_q = alpha_m / (2 * len(_LATENCY_LEVELS) * (_last_step_of(plan) + 1))
    alpha_p = alpha_m / (2 * len(_LATENCY_LEVELS))
    levels: dict[str, Any] = {}
    cum_c, cum_b = _cumulative(cand), _cumulative(base)
    rejected, noninferior, worst = False, True, ""
    margin = 0.0
    asks = [(p, a) for p in _LATENCY_LEVELS for a in (alpha_q, alpha_p)]
    bounds_c = _quantiles(cum_c, asks, horizon)
    bounds_b = _quantiles(cum_b, asks, horizon)
    for i, p in enumerate(_LATENCY_LEVELS):
        r = plan.latency_tolerance * (1 if p <= 0.5 else 2)
        (c_low, _), (_, pc_high) = bounds_c[2 * i], bounds_c[2 * i + 1]
        (_, b_high), (pb_low, _) = bounds_b[2 * i], bounds_b[2 * i + 1]
        harm = c_low > (1 + r) * b_high
        if harm and not rejected:
            worst = (
                f"p{p * 100:g} >= {c_low:.3g} ms vs baseline <= {b_high:.3g} ms "
                f"(+{r:.0%} tolerated)"
            )
        rejected = rejected or harm
        if harm and math.isfinite(b_high) and b_high > 0:
            margin = max(margin, c_low / ((1 + r) * b_high))
        noninferior = noninferior and pc_high <= (1 + r) * pb_low
        levels[f"p{p * 100:g}"] = {
            "tolerance": r,
            "candidate": _point(cum_c, p),
            "baseline": _point(cum_b, p),
            "candidate_lower": c_low,
            "baseline_upper": _finite(b_high),
            "candidate_upper_promote": _finite(pc_high),
            "baseline_lower_promote": pb_low,
        }
    n_c = int(cum_c[-1]) if len(cum_c) else 0
    n_b = int(cum_b[-1]) if len(cum_b) else 0
    return MetricResult(
        rejected=rejected,
        noninferior=noninferior,
        margin=margin,
        reason=f"candidate latency {worst} (quantile CS at alpha {alpha_q:.2g}, "
        f"calls={n_c:,}/{n_b:,})",
        evidence={
            "test": "quantile confidence sequences on histograms, current step",
            "alpha": alpha_q,
            "alpha_promote": alpha_p,
            "levels": levels,
            "n": [n_b, n_c],
        },
    )


def _mean_var(total: float, sumsq: float, n: int) -> tuple[float, float]:
    mean = total / n
    return (mean, max(sumsq / n - mean * mean, 1e-12))


def _score_diff_stats(ev: StepEvidence, horizon: int, alpha: float) -> tuple[float, float, float]:
    b, c = ev.baseline, ev.candidate
    if b.scored < 2 or c.scored < 2:
        return (0.0, 0.0, 0.0)
    m_b, v_b = _mean_var(b.score_sum, b.score_sumsq, b.scored)
    m_c, v_c = _mean_var(c.score_sum, c.score_sumsq, c.scored)
    tau2 = boundary_scale(alpha) * (v_c + v_b) / horizon
    return (m_c - m_b, v_c / c.scored + v_b / b.scored, tau2)


def _paired_stats(ev: StepEvidence, horizon: int, alpha: float) -> tuple[float, float, float]:
    pairs = ev.pairs
    if pairs.diffs < 2:
        return (0.0, 0.0, 0.0)
    mean, var = _mean_var(pairs.diff_sum, pairs.diff_sumsq, pairs.diffs)
    return (mean, var / pairs.diffs, boundary_scale(alpha) * var / horizon)


def _two_sided(
    plan: RolloutPlan,
    steps: Sequence[StepEvidence],
    alpha_m: float,
    *,
    stats: Any,
    label: str,
    n: list[int],
) -> MetricResult:
    """A shift either way beyond the score tolerance: two one-sided tests at alpha_m/2."""
    tol = plan.score_tolerance
    up = down = 0.0
    for k, ev in enumerate(steps):
        est, var, tau2 = stats(ev, _horizon(plan, k), alpha_m)
        up += msprt_log_evalue(est, var, tau2=tau2, null=tol)
        down += msprt_log_evalue(-est, var, tau2=tau2, null=tol)
    threshold = math.log(2 / alpha_m)
    est, var, tau2 = stats(steps[-1], _horizon(plan, len(steps) - 1), alpha_m)
    low, high = normal_mixture_cs(est, var, tau2=tau2, alpha=alpha_m)
    log_e = max(up, down)
    return MetricResult(
        rejected=log_e >= threshold,
        noninferior=-tol < low and high < tol,
        margin=log_e / threshold,
        reason=f"{label} shifted by {est:+.4f} (tolerance {tol:g}; e-value {_e(log_e):.3g} >= "
        f"2/alpha_m {2 / alpha_m:.1f}, n={n[1]:,}/{n[0]:,})",
        evidence={
            "test": "two one-sided mSPRTs at alpha_m/2, per-step product",
            "statistic": _e(log_e),
            "log_statistic_up": up,
            "log_statistic_down": down,
            "threshold": 2 / alpha_m,
            "estimate": est,
            "lower": _finite(low),
            "upper": _finite(high),
            "tolerance": tol,
            "n": n,
        },
    )


def _score_mean(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> MetricResult:
    cur = steps[-1]
    return _two_sided(
        plan,
        steps,
        alpha_m,
        stats=_score_diff_stats,
        label="candidate mean score",
        n=[cur.baseline.scored, cur.candidate.scored],
    )


def _score_diff(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> MetricResult:
    cur = steps[-1]
    return _two_sided(
        plan,
        steps,
        alpha_m,
        stats=_paired_stats,
        label="paired score difference",
        n=[cur.pairs.diffs, cur.pairs.diffs],
    )


def _disagreement(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> MetricResult:
    tol = plan.disagreement_tolerance
    log_e = sum(
        beta_mixture_log_evalue(ev.pairs.disagreements, ev.pairs.pairs, null=tol) for ev in steps
    )
    threshold = math.log(1 / alpha_m)
    pairs = steps[-1].pairs
    rate = pairs.disagreements / pairs.pairs if pairs.pairs else 0.0
    low, high = -math.inf, math.inf
    if pairs.pairs:
        smoothed = (pairs.disagreements + 0.5) / (pairs.pairs + 1)
        unit = smoothed * (1 - smoothed)
        low, high = normal_mixture_cs(
            rate,
            unit / pairs.pairs,
            tau2=boundary_scale(alpha_m) * unit / plan.max_samples,
            alpha=alpha_m,
        )
    return MetricResult(
        rejected=log_e >= threshold,
        noninferior=high < tol,
        margin=log_e / threshold,
        reason=f"candidate disagrees on {rate:.1%} of pairs (tolerance {tol:.1%}; e-value "
        f"{_e(log_e):.3g} >= 1/alpha_m {1 / alpha_m:.1f}, pairs={pairs.pairs:,})",
        evidence={
            "test": "truncated-Beta mixture e-value (exact), per-step product",
            "statistic": _e(log_e),
            "log_statistic": log_e,
            "threshold": 1 / alpha_m,
            "estimate": rate,
            "lower": _finite(low),
            "upper": _finite(high),
            "tolerance": tol,
            "n": [pairs.pairs],
        },
    )


def distribution_alarm(plan: RolloutPlan, steps: Sequence[StepEvidence]) -> dict[str, Any]:
    """The binned e-process on scores (omnibus): it can hold a promotion, never roll back.

    Because it never rolls back it spends none of the rollback alpha; its threshold is
    ``1/plan.alpha``. It fires on any difference, improvements and a retrained model's
    tiny ones included, so it holds promotion only while the plug-in JSD also exceeds
    `JSD_ALARM`. Shadow has no arm labels: only the JSD is reported.
    """
    current = steps[-1]
    jsd = jensen_shannon(current.candidate.score_counts, current.baseline.score_counts)
    log_e = 0.0
    usable = [
        k for k, ev in enumerate(steps) if ev.candidate.score_counts and ev.baseline.score_counts
    ]
    if plan.strategy != "shadow" and usable:
        log_e = binned_log_evalue(
            np.asarray([steps[k].candidate.score_counts for k in usable]),
            np.asarray([steps[k].baseline.score_counts for k in usable]),
            rho=np.asarray([plan.weight(k) / 100 for k in usable]),
        )
    threshold = 1 / plan.alpha
    return {
        "test": "binned Dirichlet-multinomial e-process, per-step product (alarm only)",
        "statistic": _e(log_e),
        "log_statistic": log_e,
        "threshold": threshold,
        "alarm": log_e >= math.log(threshold),
        "jsd": jsd,
    }


_EVALUATORS = {
    "error_rate": _error_rate,
    "latency": _latency,
    "score_mean": _score_mean,
    "score_diff": _score_diff,
    "disagreement": _disagreement,
}


def evaluate(
    name: str, plan: RolloutPlan, steps: Sequence[StepEvidence], *, alpha_m: float
) -> MetricResult:
    """Metric `name`'s test on steps ``0..len(steps)-1`` at its share `alpha_m`."""
    try:
        evaluator = _EVALUATORS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}: use one of {sorted(_EVALUATORS)}") from None
    return evaluator(plan, steps, alpha_m)
