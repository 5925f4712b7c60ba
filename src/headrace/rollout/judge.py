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

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from headrace.rollout.evidence import LATENCY_EDGES_MS, StepEvidence
from headrace.rollout.metrics import (
    JSD_ALARM,
    MetricResult,
    distribution_alarm,
    evaluate,
    metrics_of,
)
from headrace.rollout.plan import RolloutPlan

__all__ = ["Decision", "Verdict", "judge"]

Decision = Literal["continue", "next_step", "promote", "rollback"]


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
    results = {name: evaluate(name, plan, steps, alpha_m=alpha_m) for name in names}
    alarm = distribution_alarm(plan, steps)
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
    results: dict[str, MetricResult],
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
