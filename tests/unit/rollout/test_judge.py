"""The judge's verdicts per strategy, its input checks, and properties of its evidence."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.rollout.evidence import LATENCY_EDGES_MS, ArmEvidence, PairEvidence, StepEvidence
from headrace.rollout.judge import Verdict, judge
from headrace.rollout.metrics import JSD_ALARM, evaluate, metrics_of
from headrace.rollout.plan import RolloutPlan

EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _plan(strategy: str = "canary", steps: tuple[float, ...] = (5.0, 25.0, 50.0)) -> RolloutPlan:
    return RolloutPlan(
        name="fraud",
        baseline=1,
        candidate=2,
        strategy=strategy,  # type: ignore[arg-type]
        steps=steps,
        min_samples=1000,
        max_samples=20_000,
        score_edges=EDGES,
    )


def _arm(
    rng: np.random.Generator,
    n: int,
    *,
    errors: float = 0.02,
    latency: float = 1.0,
    scores: np.ndarray | None = None,
) -> ArmEvidence:
    arm = ArmEvidence(events=n, errors=int(rng.binomial(n, errors)))
    arm.record_calls(rng.lognormal(np.log(20 * latency), 0.5, n))
    values = rng.uniform(size=n - arm.errors) if scores is None else scores[: n - arm.errors]
    arm.record_scores(values, edges=EDGES)
    return arm


def _encodable(verdict: Verdict) -> None:
    json.dumps(msgspec.to_builtins(verdict), allow_nan=False)


def test_collecting_before_min_samples(rng: np.random.Generator) -> None:
    steps = [StepEvidence(baseline=_arm(rng, 5000), candidate=_arm(rng, 300, errors=0.5))]
    verdict = judge(_plan(), steps, step=0)
    assert verdict.decision == "continue"
    assert verdict.reason.startswith("collecting: n=300/5,000 of 1,000")


def test_bad_error_rate_rolls_back_with_a_readable_reason(rng: np.random.Generator) -> None:
    steps = [StepEvidence(baseline=_arm(rng, 19_000), candidate=_arm(rng, 1000, errors=0.2))]
    verdict = judge(_plan(), steps, step=0)
    assert (verdict.decision, verdict.metric) == ("rollback", "error_rate")
    base, cand = steps[0].baseline, steps[0].candidate
    assert verdict.reason.startswith(
        f"candidate error rate {cand.error_rate:.1%} vs baseline {base.error_rate:.1%} (e-value "
    )
    assert verdict.reason.endswith(">= 1/alpha_m 60.0, n=1,000/19,000)")
    assert (
        verdict.evidence["error_rate"]["statistic"] >= verdict.evidence["error_rate"]["threshold"]
    )
    _encodable(verdict)


def test_slow_candidate_rolls_back_on_latency(rng: np.random.Generator) -> None:
    steps = [StepEvidence(baseline=_arm(rng, 19_000), candidate=_arm(rng, 1000, latency=5))]
    verdict = judge(_plan(), steps, step=0)
    assert (verdict.decision, verdict.metric) == ("rollback", "latency")
    assert "p50" in verdict.reason
    p50 = verdict.evidence["latency"]["levels"]["p50"]
    # lognormal medians 100 ms and 20 ms, read from 5%-wide bins
    assert p50["candidate"] == pytest.approx(100, rel=0.1)
    assert p50["baseline"] == pytest.approx(20, rel=0.05)
    assert p50["candidate_lower"] > 1.05 * p50["baseline_upper"]


def test_steps_advance_then_promote_an_equal_candidate(rng: np.random.Generator) -> None:
    plan = _plan()
    done = [
        StepEvidence(baseline=_arm(rng, 19_000), candidate=_arm(rng, 1000)),
        StepEvidence(baseline=_arm(rng, 3000), candidate=_arm(rng, 1000)),
    ]
    assert judge(plan, done[:1], step=0).decision == "next_step"
    assert judge(plan, done, step=1).decision == "next_step"
    last = StepEvidence(baseline=_arm(rng, 5000), candidate=_arm(rng, 5000))
    assert judge(plan, [*done, last], step=2).decision == "continue"
    last = StepEvidence(baseline=_arm(rng, 20_000), candidate=_arm(rng, 20_000))
    verdict = judge(plan, [*done, last], step=2)
    assert verdict.decision == "promote"
    _encodable(verdict)


def test_a_full_weight_step_is_reached_by_promotion(rng: np.random.Generator) -> None:
    """With steps 5, 25, 50, 100 the 50% step is the last judged one: it promotes."""
    plan = _plan(steps=(5.0, 25.0, 50.0, 100.0))
    assert plan.last_step == 2
    done = [
        StepEvidence(baseline=_arm(rng, 19_000), candidate=_arm(rng, 1000)),
        StepEvidence(baseline=_arm(rng, 3000), candidate=_arm(rng, 1000)),
        StepEvidence(baseline=_arm(rng, 20_000), candidate=_arm(rng, 20_000)),
    ]
    assert judge(plan, done, step=2).decision == "promote"
    with pytest.raises(ValueError, match="step 3 is outside the plan's steps 0..2"):
        judge(plan, [*done, StepEvidence()], step=3)


def test_ab_reports_but_never_acts(rng: np.random.Generator) -> None:
    plan = _plan("ab", (50.0,))
    bad = [StepEvidence(baseline=_arm(rng, 2000), candidate=_arm(rng, 2000, errors=0.3))]
    verdict = judge(plan, bad, step=0)
    assert verdict.decision == "continue"
    assert verdict.reason.startswith("ab, reported only (would rollback)")
    assert verdict.evidence["finding"] == "rollback"
    good = [StepEvidence(baseline=_arm(rng, 20_000), candidate=_arm(rng, 20_000))]
    verdict = judge(plan, good, step=0)
    assert verdict.decision == "continue"
    assert verdict.evidence["finding"] == "promote"


def _shadow_step(
    rng: np.random.Generator, n: int, *, disagree: float, shift: float
) -> StepEvidence:
    base_scores = rng.uniform(0, 0.9, n)
    cand_scores = np.clip(base_scores + shift + rng.normal(0, 0.01, n), 0, 1)
    flips = rng.random(n) < disagree
    base_pred = base_scores > 0.5
    cand_pred = np.where(flips, ~base_pred, base_pred)
    pairs = PairEvidence()
    pairs.record(
        baseline_predictions=base_pred,
        candidate_predictions=cand_pred,
        baseline_scores=base_scores,
        candidate_scores=cand_scores,
    )
    baseline = _arm(rng, n, scores=base_scores)
    candidate = _arm(rng, n, scores=cand_scores)
    return StepEvidence(baseline=baseline, candidate=candidate, pairs=pairs)


def test_shadow_judges_pairs(rng: np.random.Generator) -> None:
    plan = _plan("shadow", (100.0,))
    assert metrics_of(plan) == ("error_rate", "latency", "disagreement", "score_diff")
    flips = judge(plan, [_shadow_step(rng, 3000, disagree=0.05, shift=0.0)], step=0)
    assert (flips.decision, flips.metric) == ("rollback", "disagreement")
    shifted = judge(plan, [_shadow_step(rng, 3000, disagree=0.0, shift=0.05)], step=0)
    assert (shifted.decision, shifted.metric) == ("rollback", "score_diff")
    same = judge(plan, [_shadow_step(rng, 20_000, disagree=0.0, shift=0.0)], step=0)
    assert same.decision == "promote"
    assert "jsd" in same.evidence["distribution"]
    _encodable(same)


def test_distribution_alarm_holds_promotion(rng: np.random.Generator) -> None:
    """Same mean, very different spread: the mean test cannot see it, the alarm holds."""
    plan = _plan("canary", (50.0,))
    n = 20_000
    spread = np.where(rng.random(n) < 0.5, 0.05, 0.95)
    steps = [
        StepEvidence(
            baseline=_arm(rng, n, scores=rng.uniform(size=n)), candidate=_arm(rng, n, scores=spread)
        )
    ]
    verdict = judge(plan, steps, step=0)
    assert verdict.evidence["distribution"]["jsd"] > JSD_ALARM
    assert (verdict.decision, verdict.metric) == ("continue", "distribution")
    assert verdict.reason.startswith("hold: score distributions differ")


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="step 3 is outside"):
        judge(_plan(), [StepEvidence()] * 4, step=3)
    with pytest.raises(ValueError, match="needs the evidence of steps 0..1"):
        judge(_plan(), [StepEvidence()], step=1)


def test_histograms_of_another_shape_are_refused() -> None:
    bad = StepEvidence(baseline=ArmEvidence(events=10, latency_counts=[1, 2, 3]))
    with pytest.raises(ValueError, match="step 0 baseline latency_counts has 3 bins, expected 322"):
        judge(_plan(), [bad], step=0)
    bad = StepEvidence(candidate=ArmEvidence(events=10, score_counts=[1, 2]))
    with pytest.raises(ValueError, match="step 0 candidate score_counts has 2 bins, expected 10"):
        judge(_plan(), [bad], step=0)


def test_an_unknown_metric_is_named() -> None:
    with pytest.raises(ValueError, match="unknown metric 'p95': use one of"):
        evaluate("p95", _plan(), [StepEvidence()], alpha_m=0.01)


def test_empty_evidence_continues() -> None:
    verdict = judge(_plan(), [StepEvidence()], step=0)
    assert verdict.decision == "continue"
    _encodable(verdict)


_latencies = st.lists(st.floats(0.001, 1e5, allow_nan=False), max_size=30)
_scores = st.lists(st.floats(0, 1), max_size=30)


@settings(max_examples=50)
@given(a=_latencies, b=_latencies, sa=_scores, sb=_scores)
def test_evidence_is_additive(
    a: list[float], b: list[float], sa: list[float], sb: list[float]
) -> None:
    """Summing two processes' evidence equals recording everything in one."""
    one, two, both = ArmEvidence(), ArmEvidence(), ArmEvidence()
    one.record_calls(a)
    one.record_scores(np.asarray(sa), edges=EDGES)
    two.record_calls(b)
    two.record_scores(np.asarray(sb), edges=EDGES)
    both.record_calls(a + b)
    both.record_scores(np.asarray(sa + sb), edges=EDGES)
    one.add(two)
    assert one.latency_counts == both.latency_counts
    assert one.score_counts == both.score_counts
    assert one.scored == both.scored
    assert one.score_sum == pytest.approx(both.score_sum)
    assert len(both.latency_counts) in (0, len(LATENCY_EDGES_MS) + 1)


_pairs = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.floats(0, 1), st.floats(0, 1)), max_size=30
)


def _record(pairs: PairEvidence, rows: list[tuple[bool, bool, float, float]]) -> None:
    if rows:
        b_pred, c_pred, b_score, c_score = (
            np.asarray(column) for column in zip(*rows, strict=True)
        )
        pairs.record(
            baseline_predictions=b_pred,
            candidate_predictions=c_pred,
            baseline_scores=b_score,
            candidate_scores=c_score,
        )


@settings(max_examples=50)
@given(a=_pairs, b=_pairs, errors=st.tuples(st.integers(0, 5), st.integers(0, 5)))
def test_pair_and_step_evidence_are_additive(
    a: list[tuple[bool, bool, float, float]],
    b: list[tuple[bool, bool, float, float]],
    errors: tuple[int, int],
) -> None:
    """Two processes' shadow pairs and step rows sum to what one process would record."""
    one, two, both = StepEvidence(), StepEvidence(), StepEvidence()
    _record(one.pairs, a)
    _record(two.pairs, b)
    _record(both.pairs, a + b)
    one.candidate.events, one.candidate.errors = 10, errors[0]
    two.candidate.events, two.candidate.errors = 10, errors[1]
    one.add(two)
    assert (one.pairs.pairs, one.pairs.disagreements, one.pairs.diffs) == (
        both.pairs.pairs,
        both.pairs.disagreements,
        both.pairs.diffs,
    )
    assert one.pairs.diff_sum == pytest.approx(both.pairs.diff_sum)
    assert one.pairs.diff_sumsq == pytest.approx(both.pairs.diff_sumsq)
    assert (one.candidate.events, one.candidate.errors) == (20, sum(errors))


@settings(max_examples=60, deadline=None)
@given(
    n_b=st.integers(0, 30_000),
    n_c=st.integers(0, 30_000),
    e_b=st.floats(0, 1),
    e_c=st.floats(0, 1),
    slow=st.floats(0.2, 10),
    step=st.integers(0, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_verdicts_are_json_and_evalues_nonnegative(
    n_b: int, n_c: int, e_b: float, e_c: float, slow: float, step: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    steps = [
        StepEvidence(
            baseline=_arm(rng, n_b, errors=e_b), candidate=_arm(rng, n_c, errors=e_c, latency=slow)
        )
        for _ in range(step + 1)
    ]
    verdict = judge(_plan(), steps, step=step)
    _encodable(verdict)
    for name in ("error_rate", "score_mean", "distribution"):
        if name in verdict.evidence:
            assert verdict.evidence[name]["statistic"] >= 0.0
