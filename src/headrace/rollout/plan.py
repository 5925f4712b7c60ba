"""What a rollout is, frozen before its first event: arms, steps, key, alpha, tolerances.

Everything the judge's guarantee depends on (the alpha split, the minimum sample, the
score bins, the tolerances) is fixed here when the rollout starts and stored with it, so
every worker, server and lease holder judges by the same rules, and a resumed lease holder
continues the same test rather than starting a new one.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["STRATEGIES", "RolloutPlan", "Strategy"]

Strategy = Literal["shadow", "canary", "ab"]
STRATEGIES: tuple[Strategy, ...] = ("shadow", "canary", "ab")


class RolloutPlan(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The frozen rules of one rollout.

    Attributes
    ----------
    name
        The release name (``fraud``); the baseline is the release ``champion`` pointed at
        when the rollout started.
    baseline, candidate
        Versions of `name`.
    strategy
        ``shadow`` (the candidate scores a share of traffic beside the baseline; its
        outputs go to the shadow sink only), ``canary`` (steps of traffic weight, sticky by
        key) or ``ab`` (fixed sticky weights, analysed and reported, never acted on).
    steps
        Candidate traffic weights in percent, ascending, one per step (canary); one weight
        for ab (its split) and shadow (the share of events the candidate also scores).
    alpha
        The probability of a false rollback over the whole rollout, however often it looks.
    min_samples
        Events per arm (pairs in shadow) before any decision of a step.
    max_samples
        Events per arm at which a step that showed no harm advances (or the last one
        promotes) without proof of non-inferiority (a power guarantee only).
    key_field
        The event field whose value assigns an event to an arm (sticky: the same key always
        lands on the same arm for a given rollout); the pipeline's id field when unset.
    salt
        Mixed into the key hash so two rollouts split traffic independently.
    score_edges
        Inner edges of the score bins (deciles of the baseline's scores on its reference
        sample, tied edges merged); empty when the model gives no scores.
    baseline_mean_score
        The baseline's mean score on its reference sample (for the mean-score tolerance),
        or None.
    error_tolerance
        Tolerated absolute increase of the error rate (0.001 = 0.1 percentage points).
    latency_tolerance
        Tolerated relative increase of model latency at p50 (0.05 = 5%); p99 gets twice it.
    score_tolerance
        Tolerated absolute change of the mean score.
    disagreement_tolerance
        Tolerated share of shadowed pairs whose predictions differ.
    """

    name: str
    baseline: int
    candidate: int
    strategy: Strategy
    steps: tuple[float, ...]
    alpha: float = 0.05
    min_samples: int = 1000
    max_samples: int = 50_000
    key_field: str | None = None
    salt: str = ""
    score_edges: tuple[float, ...] = ()
    baseline_mean_score: float | None = None
    error_tolerance: float = 0.001
    latency_tolerance: float = 0.05
    score_tolerance: float = 0.01
    disagreement_tolerance: float = 0.01

    def weight(self, step: int) -> float:
        """The candidate's traffic weight (percent) at `step` (0-based)."""
        return self.steps[min(step, len(self.steps) - 1)]

    @property
    def last_step(self) -> int:
        """The index of the last judged step: the last one below 100% in a canary (a 100%
        step has no baseline left to compare with: promotion is what reaches it), else the
        last one (a shadow's or an ab's single weight)."""
        if self.strategy != "canary":
            return len(self.steps) - 1
        below = [k for k, weight in enumerate(self.steps) if weight < 100]
        return below[-1] if below else 0
