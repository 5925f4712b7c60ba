"""The rollout judge: one verdict from a plan and every step's summed evidence.

`judge` is a pure function, so any lease holder (or a test feeding simulated arms) reaches
the same verdict from the same rows. Its guarantee: over the whole rollout, however often
it is called, the probability of a false rollback is at most ``plan.alpha`` (under the
tests' assumptions: independent events, a CLT for the proportion and mean tests beyond
``plan.min_samples``, stationary arms within a step).

How the guarantee is kept:

- ``plan.alpha`` is split evenly (Bonferroni) over the plan's metrics, a frozen list that
  depends on the strategy and on whether the model gives scores, never on the data.
- Two-arm e-values are computed per step and multiplied across steps (the product of
  per-step test supermartingales, each stopped at its step's end, is one): a canary
  step changes the candidate's share, and pooling counts across steps would compare a
  candidate seen mostly late with a baseline seen mostly early, so a shift common to both
  arms (an upstream outage, the time of day) would look like harm (Simpson's paradox).
  Within a step the arms are contemporaneous.
- Quantile confidence sequences (latency) are per step with their alpha split over the
  plan's judged steps (a canary's 100% step is reached by promotion, never judged), so
  the union over steps, arms and levels stays within the metric's share.
- Promotion uses the current (last) step's confidence sequences with a separate
  ``plan.alpha`` split the same way (a promotion error is a different error).
- Rollback waits for ``plan.min_samples`` per arm in the current step: looking late
  never costs validity, and the minimum keeps the CLT approximations honest. Before it
  a verdict carries counts only. The price is delay: a 5% canary step needs about 20,000
  events before even a gross regression can be rolled back.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

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

__all__ = ["JSD_ALARM", "Decision", "Verdict", "judge", "metrics_of"]

Decision = Literal["continue", "next_step", "promote", "rollback"]

JSD_ALARM = 0.1
"""The plug-in Jensen-Shannon divergence (base 2) above which a distribution alarm holds."""

_LATENCY_LEVELS = (0.5, 0.99)
_LOG_CAP = 700.0


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """What the judge decided, why in one line, and the numbers behind it.

    Attributes
    ----------
    decision
        ``continue`` (collect more), ``next_step`` (raise the candidate's weight),
        ``promote`` or ``rollback``. An ``ab`` rollout is only reported: it always
        continues, and `evidence` ``finding`` says what a canary would have done.
    reason
        One line for ``rollout status``.
    evidence
        JSON-able: per metric its statistic, threshold, estimate, bounds, sample sizes.
    metric
        The metric that decided a rollback or a hold, else None.
    """

    decision: Decision
    reason: str
    evidence: dict[str, Any]
    metric: str | None = None


class _Result(msgspec.Struct, kw_only=True):
    rejected: bool
    noninferior: bool
    margin: float  # log e-value over log threshold: which rejection is strongest
    reason: str
    evidence: dict[str, Any]


def metrics_of(plan: RolloutPlan) -> tuple[str, ...]:
    """The metrics `plan` is judged on, in a frozen order (each gets ``alpha / len``)."""
    scores = bool(plan.score_edges) or plan.baseline_mean_score is not None
    if plan.strategy == "shadow":
        return ("error_rate", "latency", "disagreement") + (("score_diff",) if scores else ())
    return ("error_rate", "latency") + (("score_mean",) if scores else ())


def judge(plan: RolloutPlan, steps: Sequence[StepEvidence], *, step: int) -> Verdict:
    """Decide what a rollout does next from the evidence of steps ``0..step``.

    Parameters
    ----------
    plan
        The frozen rules.
    steps
        ``steps[k]`` is step k's summed evidence; the current step last.
    step
        The current step (0-based).

    Returns
    -------
    Verdict
        Rollback as soon as a metric's test rejects (once the current step has
        ``min_samples`` per arm); next step when a non-last step has them; promote at the
        last step when every metric shows non-inferiority, or at ``max_samples`` per arm
        without a rollback, unless the distribution alarm holds.
    """
    if not 0 <= step <= plan.last_step:
        raise ValueError(f"step {step} is outside the plan's steps 0..{plan.last_step}")
    if len(steps) != step + 1:
        raise ValueError(
            f"judge needs the evidence of steps 0..{step} ({step + 1} entries), got {len(steps)}"
        )
    _check_bins(plan, steps)
    current = steps[-1]
    n_c, n_b = current.candidate.events, current.baseline.events
    ready = min(n_c, n_b) >= plan.min_samples
    if plan.strategy == "shadow":
        ready = ready and current.pairs.pairs >= plan.min_samples
    position = {"step": step, "weight": plan.weight(step), "events": [n_b, n_c]}
    if not ready:
        # Statistics start with the minimum sample: before it their CLT approximations
        # are not trusted, so a collecting verdict carries counts only (and costs little).
        return Verdict(
            decision="continue",
            reason=f"collecting: n={n_c:,}/{n_b:,} of {plan.min_samples:,} per arm "
            f"at step {step} ({plan.weight(step):g}%)",
            evidence={"step": position, "finding": None},
        )
    names = metrics_of(plan)
    alpha_m = plan.alpha / len(names)
    results = {name: _EVALUATORS[name](plan, steps, alpha_m) for name in names}
    alarm = _distribution_alarm(plan, steps)
    evidence: dict[str, Any] = {name: r.evidence for name, r in results.items()}
    evidence["distribution"] = alarm
    evidence["step"] = position
    rejected = [(r.margin, name) for name, r in results.items() if r.rejected]
    finding: Decision | None = None
    if rejected:
        name = max(rejected)[1]
        finding = "rollback"
        verdict = Verdict(
            decision="rollback", reason=results[name].reason, evidence=evidence, metric=name
        )
    elif step < plan.last_step:
        finding = "next_step"
        verdict = Verdict(
            decision="next_step",
            reason=f"no harm at step {step} ({plan.weight(step):g}%, n={n_c:,}/{n_b:,}): "
            f"next {plan.weight(step + 1):g}%",
            evidence=evidence,
        )
    else:
        verdict, finding = _last_step(plan, results, alarm, evidence, n_c, n_b)
    evidence["finding"] = finding
    if plan.strategy == "ab" and verdict.decision != "continue":
        return Verdict(
            decision="continue",
            reason=f"ab, reported only (would {verdict.decision}): {verdict.reason}",
            evidence=evidence,
            metric=verdict.metric,
        )
    return verdict


def _check_bins(plan: RolloutPlan, steps: Sequence[StepEvidence]) -> None:
    """Histograms must have the bins the tests assume (rows from another plan would not)."""
    latency_bins, score_bins = len(LATENCY_EDGES_MS) + 1, len(plan.score_edges) + 1
    for k, ev in enumerate(steps):
        for label, arm in (("baseline", ev.baseline), ("candidate", ev.candidate)):
            if len(arm.latency_counts) not in (0, latency_bins):
                raise ValueError(
                    f"step {k} {label} latency_counts has {len(arm.latency_counts)} bins, "
                    f"expected {latency_bins} (LATENCY_EDGES_MS): record with record_calls"
                )
            if len(arm.score_counts) not in (0, score_bins):
                raise ValueError(
                    f"step {k} {label} score_counts has {len(arm.score_counts)} bins, expected "
                    f"{score_bins} (plan.score_edges): record with the plan's edges"
                )


def _last_step(
    plan: RolloutPlan,
    results: dict[str, _Result],
    alarm: dict[str, Any],
    evidence: dict[str, Any],
    n_c: int,
    n_b: int,
) -> tuple[Verdict, Decision | None]:
    hold = bool(alarm["alarm"]) and alarm["jsd"] > JSD_ALARM
    if hold:
        return (
            Verdict(
                decision="continue",
                reason=f"hold: score distributions differ (JSD {alarm['jsd']:.3f} > "
                f"{JSD_ALARM}, e-value {alarm['statistic']:.3g} >= {alarm['threshold']:.3g}); "
                "escalate",
                evidence=evidence,
                metric="distribution",
            ),
            None,
        )
    if all(r.noninferior for r in results.values()):
        return (
            Verdict(
                decision="promote",
                reason=f"non-inferior on {', '.join(results)} (n={n_c:,}/{n_b:,})",
                evidence=evidence,
            ),
            "promote",
        )
    if min(n_c, n_b) >= plan.max_samples:
        return (
            Verdict(
                decision="promote",
                reason=f"no harm shown by max_samples {plan.max_samples:,} per arm "
                f"(n={n_c:,}/{n_b:,}); non-inferiority not shown on "
                f"{', '.join(n for n, r in results.items() if not r.noninferior)}",
                evidence=evidence,
            ),
            "promote",
        )
    pending = ", ".join(n for n, r in results.items() if not r.noninferior)
    return (
        Verdict(
            decision="continue",
            reason=f"no harm yet, non-inferiority pending on {pending} (n={n_c:,}/{n_b:,})",
            evidence=evidence,
        ),
        None,
    )


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


def _error_rate(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> _Result:
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
    return _Result(
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


def _latency(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> _Result:
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
            "candidate_lower": c_low,
            "baseline_upper": _finite(b_high),
            "candidate_upper_promote": _finite(pc_high),
            "baseline_lower_promote": pb_low,
        }
    n_c = int(cum_c[-1]) if len(cum_c) else 0
    n_b = int(cum_b[-1]) if len(cum_b) else 0
    return _Result(
        rejected=rejected,
        noninferior=noninferior,
        margin=margin,
        reason=f"candidate latency {worst} (quantile CS at alpha {alpha_q:.2g}, "
        f"calls={n_c:,}/{n_b:,})",
        evidence={
            "test": "quantile confidence sequences on histograms, current step",
            "alpha": alpha_q,
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
) -> _Result:
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
    return _Result(
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


def _score_mean(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> _Result:
    cur = steps[-1]
    return _two_sided(
        plan,
        steps,
        alpha_m,
        stats=_score_diff_stats,
        label="candidate mean score",
        n=[cur.baseline.scored, cur.candidate.scored],
    )


def _score_diff(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> _Result:
    cur = steps[-1]
    return _two_sided(
        plan,
        steps,
        alpha_m,
        stats=_paired_stats,
        label="paired score difference",
        n=[cur.pairs.diffs, cur.pairs.diffs],
    )


def _disagreement(plan: RolloutPlan, steps: Sequence[StepEvidence], alpha_m: float) -> _Result:
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
    return _Result(
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


def _distribution_alarm(plan: RolloutPlan, steps: Sequence[StepEvidence]) -> dict[str, Any]:
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
