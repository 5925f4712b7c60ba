"""The judge's error rates by simulation: simulated arms fed through `judge` look by look.

A rollout here is production-like: the judge looks after every 500 events (each event
assigned to the candidate with the step's weight, one key per event), canary steps 5%,
25%, 50% with ``min_samples`` 1,000 per arm and ``max_samples`` 10,000 per arm at the last
step (the plan default is 50,000; fewer looks keep the file fast and the bound is the
same), a 2% error rate, lognormal latencies (one observation per request, median 20 ms,
sigma 0.5), Beta(2, 5) scores binned at the baseline's deciles.

The false-rollback bound: at ``alpha = 0.05``, false rollbacks X of 1,000 independent
rollouts are at most Bin(1000, 0.05) (mean 50, sd 6.9), and P(X >= 63) = 0.038, so a
correct judge passes ``X <= 62`` at least 96% of the time (ROLLOUT-JUDGE.md, section 6).
Smaller runs use the binomial 99th percentile instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy import stats

from headrace.rollout.evidence import LATENCY_EDGES_MS, ArmEvidence, PairEvidence, StepEvidence
from headrace.rollout.judge import Verdict, judge
from headrace.rollout.plan import RolloutPlan

LOOK = 500
SCORE_A, SCORE_B = 2.0, 5.0
EDGES = tuple(float(x) for x in stats.beta.ppf(np.linspace(0.1, 0.9, 9), SCORE_A, SCORE_B))
PLAN = RolloutPlan(
    name="fraud",
    baseline=1,
    candidate=2,
    strategy="canary",
    steps=(5.0, 25.0, 50.0),
    alpha=0.05,
    min_samples=1000,
    max_samples=10_000,
    score_edges=EDGES,
    error_tolerance=0.001,
    latency_tolerance=0.05,
    score_tolerance=0.01,
)
_LAT_EDGES = np.asarray(LATENCY_EDGES_MS)

Decide = Callable[[RolloutPlan, Sequence[StepEvidence], int], Verdict]


@dataclass(frozen=True)
class Arm:
    """How one arm behaves: error rate, latency scale, score distribution and shift."""

    error_rate: float = 0.02
    latency_scale: float = 1.0
    score_a: float = SCORE_A
    score_shift: float = 0.0


@dataclass(frozen=True)
class Outcome:
    decision: str
    events: int  # all events up to the decision
    candidate_events: int


_LAT_BINS = len(LATENCY_EDGES_MS) + 1
_SCORE_BINS = len(EDGES) + 1
_LOG_FIRST = float(np.log(LATENCY_EDGES_MS[0]))
_LOG_STEP = float(np.log(LATENCY_EDGES_MS[-1] / LATENCY_EDGES_MS[0]) / (len(LATENCY_EDGES_MS) - 1))


class _ArmLooks:
    """One arm's running sums within a step after each of `looks` looks, drawn at once.

    Drawing a whole step's events in a few vectorised calls (and slicing rows per look)
    keeps a rollout's simulation cheaper than the judge it feeds; looks after the step
    ended are simply never read.
    """

    def __init__(self, rng: np.random.Generator, arm: Arm, n: np.ndarray) -> None:
        looks = n.size
        errors = rng.binomial(n, arm.error_rate)
        # The edges are geometric: a bin index is a scaled log (the rounding of the
        # stored edges moves a value across an edge about once in 10^5; both arms alike).
        log_latency = rng.normal(np.log(20.0 * arm.latency_scale), 0.5, int(n.sum()))
        lat_bins = np.clip(
            np.floor((log_latency - _LOG_FIRST) / _LOG_STEP).astype(np.int64) + 1, 0, _LAT_BINS - 1
        )
        lat_look = np.repeat(np.arange(looks), n)
        self.latency = (
            np.bincount(lat_look * _LAT_BINS + lat_bins, minlength=looks * _LAT_BINS)
            .reshape(looks, _LAT_BINS)
            .cumsum(axis=0)
        )
        scored = n - errors
        values = rng.beta(arm.score_a, SCORE_B, int(scored.sum()))
        if arm.score_shift:
            values = np.clip(values + arm.score_shift, 0.0, 1.0)
        score_look = np.repeat(np.arange(looks), scored)
        score_bins = np.searchsorted(EDGES, values, side="right")
        self.scores = (
            np.bincount(score_look * _SCORE_BINS + score_bins, minlength=looks * _SCORE_BINS)
            .reshape(looks, _SCORE_BINS)
            .cumsum(axis=0)
        )
        self.score_sum = np.bincount(score_look, weights=values, minlength=looks).cumsum()
        self.score_sumsq = np.bincount(
            score_look, weights=values * values, minlength=looks
        ).cumsum()
        self.events, self.errors, self.scored = n.cumsum(), errors.cumsum(), scored.cumsum()

    def evidence(self, look: int) -> ArmEvidence:
        return ArmEvidence(
            events=int(self.events[look]),
            errors=int(self.errors[look]),
            latency_counts=self.latency[look].tolist(),
            score_counts=self.scores[look].tolist(),
            score_sum=float(self.score_sum[look]),
            score_sumsq=float(self.score_sumsq[look]),
            scored=int(self.scored[look]),
        )


def _looks_of_step(plan: RolloutPlan, step: int) -> int:
    """Enough looks for any step to end (min_samples, or max_samples at the last)."""
    need = plan.max_samples if step >= plan.last_step else plan.min_samples
    share = min(plan.weight(step), 100 - plan.weight(step)) / 100
    return int(1.15 * need / (LOOK * share)) + 6


def run_rollout(
    rng: np.random.Generator,
    *,
    baseline: Arm,
    candidate: Arm,
    plan: RolloutPlan = PLAN,
    decide: Decide = lambda p, s, k: judge(p, s, step=k),
    error_by_step: Sequence[float] | None = None,
) -> Outcome:
    """One rollout, judged after every `LOOK` events until it promotes or rolls back.

    `error_by_step` overrides both arms' error rates per step (a drift common to both).
    """
    done: list[StepEvidence] = []
    total, cand_total = 0, 0
    for step in range(len(plan.steps)):
        looks = _looks_of_step(plan, step)
        n_c = rng.binomial(LOOK, plan.weight(step) / 100, size=looks)
        arm_b, arm_c = baseline, candidate
        if error_by_step is not None:
            arm_b = dataclasses.replace(baseline, error_rate=error_by_step[step])
            arm_c = dataclasses.replace(candidate, error_rate=error_by_step[step])
        base, cand = _ArmLooks(rng, arm_b, LOOK - n_c), _ArmLooks(rng, arm_c, n_c)
        for look in range(looks):
            total += LOOK
            cand_total += int(n_c[look])
            current = StepEvidence(baseline=base.evidence(look), candidate=cand.evidence(look))
            verdict = decide(plan, [*done, current], step)
            if verdict.decision in ("rollback", "promote"):
                return Outcome(verdict.decision, total, cand_total)
            if verdict.decision == "next_step":
                done.append(current)
                break
        else:  # the step never ended: a hold, neither rollback nor promote
            return Outcome(verdict.decision, total, cand_total)
    raise AssertionError(f"the judge moved past the last step {plan.last_step}")


def run_many(
    seed: int,
    runs: int,
    *,
    baseline: Arm,
    candidate: Arm,
    decide: Decide | None = None,
    error_by_step: Sequence[float] | None = None,
) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    kwargs: dict[str, Any] = {"error_by_step": error_by_step}
    if decide is not None:
        kwargs["decide"] = decide
    return [run_rollout(rng, baseline=baseline, candidate=candidate, **kwargs) for _ in range(runs)]


def _rollbacks(outcomes: list[Outcome]) -> int:
    return sum(o.decision == "rollback" for o in outcomes)


def _bound(runs: int, alpha: float = 0.05) -> int:
    """The largest false-rollback count a correct judge exceeds with probability <= 1%."""
    return int(stats.binom.ppf(0.99, runs, alpha))


def test_aa_false_rollbacks_within_alpha(seed: int) -> None:
    """1,000 A/A rollouts: X false rollbacks, X <= 62 (P(X >= 63) = 0.038 under Bin(1000, .05)).

    Also: most A/A rollouts end promoted (the rest roll back falsely or hold).
    """
    outcomes = run_many(seed, 1000, baseline=Arm(), candidate=Arm())
    false = _rollbacks(outcomes)
    promoted = sum(o.decision == "promote" for o in outcomes)
    print(f"A/A seed={seed}: false rollbacks {false}/1000, promoted {promoted}/1000")
    assert false <= 62, f"seed {seed}: {false} false rollbacks of 1000 (bound 62)"
    assert promoted >= 900, f"seed {seed}: only {promoted} of 1000 A/A rollouts promoted"


def test_drift_common_to_both_arms_is_not_harm(seed: int) -> None:
    """Both arms' error rate doubles at the 50% step (2%, 2%, 4%): no rollback beyond alpha.

    Pooled over steps, the candidate (mostly seen at 4%) would look 1.1 pp worse than the
    baseline (mostly seen at 2%), far beyond the 0.1 pp tolerance; the per-step product
    compares arms only within a step. 150 rollouts; bound: Bin(150, 0.05)'s 99th
    percentile, 14.
    """
    outcomes = run_many(
        seed, 150, baseline=Arm(), candidate=Arm(), error_by_step=(0.02, 0.02, 0.04)
    )
    false = _rollbacks(outcomes)
    print(f"common drift seed={seed}: rollbacks {false}/150 (bound {_bound(150)})")
    assert false <= _bound(150), f"seed {seed}: {false} rollbacks of 150 under common drift"


@pytest.mark.parametrize(
    ("label", "candidate"),
    [
        ("error rate +0.1 pp", Arm(error_rate=0.021)),
        ("latency x1.05", Arm(latency_scale=1.05)),
        ("mean score +0.01", Arm(score_shift=0.01)),
    ],
)
def test_boundary_null(seed: int, label: str, candidate: Arm) -> None:
    """A candidate exactly at one tolerance is not rolled back more often than alpha allows.

    150 rollouts each; bound: the 99th percentile of Bin(150, 0.05), 14. Measured with
    200 each: 0-1 rollbacks per tolerance in four runs.
    """
    outcomes = run_many(seed, 150, baseline=Arm(), candidate=candidate)
    false = _rollbacks(outcomes)
    print(f"boundary {label} seed={seed}: rollbacks {false}/150 (bound {_bound(150)})")
    assert false <= _bound(150), f"seed {seed}: {label}: {false} rollbacks of 150"


def _naive(plan: RolloutPlan, steps: Sequence[StepEvidence], step: int) -> Verdict:
    """A fixed-horizon two-sided z-test on the pooled error rates, repeated at every look."""
    current = steps[-1]
    ready = min(current.baseline.events, current.candidate.events) >= plan.min_samples
    if not ready:
        return Verdict(decision="continue", reason="", evidence={})
    x_c = sum(s.candidate.errors for s in steps)
    n_c = sum(s.candidate.events for s in steps)
    x_b = sum(s.baseline.errors for s in steps)
    n_b = sum(s.baseline.events for s in steps)
    pooled = (x_c + x_b) / (n_c + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_b))
    z = (x_c / n_c - x_b / n_b) / se if se > 0 else 0.0
    if abs(z) > stats.norm.ppf(1 - plan.alpha / 2):
        return Verdict(decision="rollback", reason="z", evidence={})
    if step < plan.last_step:
        return Verdict(decision="next_step", reason="", evidence={})
    if min(current.baseline.events, current.candidate.events) >= plan.max_samples:
        return Verdict(decision="promote", reason="", evidence={})
    return Verdict(decision="continue", reason="", evidence={})


def test_harness_catches_peeking(seed: int) -> None:
    """The same harness fails a repeated fixed-horizon z-test: false rollbacks far above 5%.

    About 40 looks reach the z-test (one at each canary step, the rest at the last step);
    measured 56, 64, 66, 71, 71 and 73 false rollbacks of 300 (19-24%: the inflation
    section 1 of ROLLOUT-JUDGE.md describes). It must exceed even what a correct 8% test
    would show at its 99.9th percentile (40 of 300).
    """
    outcomes = run_many(seed, 300, baseline=Arm(), candidate=Arm(), decide=_naive)
    false = _rollbacks(outcomes)
    print(f"naive z-test seed={seed}: false rollbacks {false}/300")
    limit = stats.binom.ppf(0.999, 300, 0.08)
    assert false > limit, f"seed {seed}: the peeking z-test had only {false} of 300 (<= {limit})"


@pytest.mark.parametrize(
    ("label", "candidate", "metric"),
    [
        ("20% errors", Arm(error_rate=0.20), "error_rate"),
        ("5x latency", Arm(latency_scale=5.0), "latency"),
        ("scores +0.15", Arm(score_shift=0.15), "score_mean"),
    ],
)
def test_bad_candidates_rolled_back(seed: int, label: str, candidate: Arm, metric: str) -> None:
    """Each bad candidate of issue 12 is rolled back, at the first step.

    Measured (20 runs each): every one rolled back at the first look with 1,000 candidate
    events (about 20,000 events in all at 5%): the minimum sample is the whole delay.
    """
    outcomes = run_many(seed, 20, baseline=Arm(), candidate=candidate)
    rolled = _rollbacks(outcomes)
    events = np.median([o.events for o in outcomes])
    cand = np.median([o.candidate_events for o in outcomes])
    print(
        f"{label} seed={seed}: rolled back {rolled}/20, median events {events:,.0f} "
        f"(candidate {cand:,.0f})"
    )
    assert rolled == 20, f"seed {seed}: {label} rolled back in {rolled} of 20"
    verdict = _first_rollback(seed, candidate)
    assert verdict.metric == metric, f"seed {seed}: {label} decided by {verdict.metric}"


def _first_rollback(seed: int, candidate: Arm) -> Verdict:
    captured: list[Verdict] = []

    def decide(plan: RolloutPlan, steps: Sequence[StepEvidence], step: int) -> Verdict:
        verdict = judge(plan, steps, step=step)
        captured.append(verdict)
        return verdict

    run_rollout(np.random.default_rng(seed), baseline=Arm(), candidate=candidate, decide=decide)
    return captured[-1]


@pytest.mark.parametrize(
    ("label", "candidate"),
    [
        ("error rate 4%", Arm(error_rate=0.04)),
        ("latency x1.5", Arm(latency_scale=1.5)),
        ("mean score +0.03", Arm(score_shift=0.03)),
    ],
)
def test_moderate_regressions_caught_by_max_samples(seed: int, label: str, candidate: Arm) -> None:
    """Power for smaller regressions (20 runs each; at least 18 rolled back).

    Measured with 30 runs each (median / 90th percentile of all events to the rollback):
    error rate 3% (vs 2%, tolerance 0.1 pp) 29/30, 29,000 / 39,200; 4%: 30/30, 24,250 /
    25,650; latency x1.2: 22/30, 36,750 / 43,000; x1.5: 30/30, 20,500 / 21,050; mean
    score +0.02: 23/30, 31,000 / 38,800; +0.03: 30/30, 21,000 / 25,050.
    """
    outcomes = run_many(seed, 20, baseline=Arm(), candidate=candidate)
    rolled = [o.events for o in outcomes if o.decision == "rollback"]
    median = np.median(rolled) if rolled else float("nan")
    print(f"{label} seed={seed}: rolled back {len(rolled)}/20, median events {median:,.0f}")
    assert len(rolled) >= 18, f"seed {seed}: {label} rolled back in {len(rolled)} of 20"


def test_retrained_candidate_promoted(seed: int) -> None:
    """A retrained equal candidate (scores Beta(2.02, 5): mean +0.002) is promoted."""
    outcomes = run_many(seed, 20, baseline=Arm(), candidate=Arm(score_a=2.02))
    promoted = sum(o.decision == "promote" for o in outcomes)
    print(
        f"retrained seed={seed}: promoted {promoted}/20, median events "
        f"{np.median([o.events for o in outcomes]):,.0f}"
    )
    assert promoted >= 18, f"seed {seed}: retrained candidate promoted in {promoted} of 20"


SHADOW = RolloutPlan(
    name="fraud",
    baseline=1,
    candidate=2,
    strategy="shadow",
    steps=(100.0,),
    min_samples=1000,
    max_samples=10_000,
    score_edges=EDGES,
    disagreement_tolerance=0.01,
    score_tolerance=0.01,
)


def run_shadow(
    rng: np.random.Generator, *, disagree: float, shift: float, noise: float = 0.02
) -> Outcome:
    """One shadow rollout: every event scored by both arms, judged every `LOOK` pairs."""
    looks = SHADOW.max_samples // LOOK + 2
    n = np.full(looks, LOOK)
    base, cand = _ArmLooks(rng, Arm(), n), _ArmLooks(rng, Arm(), n)
    flips = rng.binomial(LOOK, disagree, size=looks).cumsum()
    diffs = rng.normal(shift, noise, size=(looks, LOOK))
    diff_sum, diff_sumsq = diffs.sum(axis=1).cumsum(), (diffs * diffs).sum(axis=1).cumsum()
    for look in range(looks):
        pairs = PairEvidence(
            pairs=LOOK * (look + 1),
            disagreements=int(flips[look]),
            diff_sum=float(diff_sum[look]),
            diff_sumsq=float(diff_sumsq[look]),
            diffs=LOOK * (look + 1),
        )
        current = StepEvidence(
            baseline=base.evidence(look), candidate=cand.evidence(look), pairs=pairs
        )
        verdict = judge(SHADOW, [current], step=0)
        if verdict.decision in ("rollback", "promote"):
            return Outcome(verdict.decision, LOOK * (look + 1), LOOK * (look + 1))
    return Outcome(verdict.decision, LOOK * looks, LOOK * looks)


@pytest.mark.parametrize(
    ("label", "disagree", "shift"),
    [
        ("retrained: 0.5% disagree, no shift", 0.005, 0.0),
        ("boundary: 1% disagree", 0.01, 0.0),
        ("boundary: paired shift +0.01", 0.005, 0.01),
    ],
)
def test_shadow_false_rollbacks_within_alpha(
    seed: int, label: str, disagree: float, shift: float
) -> None:
    """Shadow nulls (150 runs each): rollbacks within Bin(150, 0.05)'s 99th percentile, 14.

    Measured with 300 runs each: 0 rollbacks in all three, every run promoted.
    """
    rng = np.random.default_rng(seed)
    outcomes = [run_shadow(rng, disagree=disagree, shift=shift) for _ in range(150)]
    false = _rollbacks(outcomes)
    promoted = sum(o.decision == "promote" for o in outcomes)
    print(f"shadow {label} seed={seed}: rollbacks {false}/150, promoted {promoted}/150")
    assert false <= _bound(150), f"seed {seed}: shadow {label}: {false} rollbacks of 150"


@pytest.mark.parametrize(
    ("label", "disagree", "shift", "metric"),
    [("3% disagree", 0.03, 0.0, "disagreement"), ("paired shift +0.05", 0.005, 0.05, "score_diff")],
)
def test_shadow_bad_candidates_rolled_back(
    seed: int, label: str, disagree: float, shift: float, metric: str
) -> None:
    """Shadow regressions are rolled back at the first look with 1,000 pairs."""
    rng = np.random.default_rng(seed)
    outcomes = [run_shadow(rng, disagree=disagree, shift=shift) for _ in range(20)]
    rolled = [o.events for o in outcomes if o.decision == "rollback"]
    print(
        f"shadow {label} seed={seed}: rolled back {len(rolled)}/20, median pairs "
        f"{np.median(rolled) if rolled else float('nan'):,.0f}"
    )
    assert len(rolled) == 20, f"seed {seed}: shadow {label} rolled back in {len(rolled)} of 20"
