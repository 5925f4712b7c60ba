"""The rollout judge's cost per look: one `judge` call on realistic summed evidence.

Run: ``.venv/bin/python benchmarks/judge_cost.py``. A canary at its last step (5%, 25%,
50%) with 1,000 / 1,000 / 20,000 candidate events, every metric computed (error rate,
p50/p99 latency from 322-bin histograms, mean score, the binned score e-process over 10
bins), and, for comparison, a look before the minimum sample (counts only) and a shadow
look. The lease holder makes one such call per rollout per interval, so this is the
judge's whole cost per batch interval, whatever the traffic.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from headrace.rollout.evidence import ArmEvidence, PairEvidence, StepEvidence
from headrace.rollout.judge import judge
from headrace.rollout.plan import RolloutPlan

rng = np.random.default_rng(0)
edges = tuple(float(x) for x in np.quantile(rng.beta(2, 5, 100_000), np.linspace(0.1, 0.9, 9)))


def arm(n: int) -> ArmEvidence:
    evidence = ArmEvidence(events=n, errors=int(rng.binomial(n, 0.02)))
    evidence.record_calls(rng.lognormal(np.log(20.0), 0.5, n))
    evidence.record_scores(rng.beta(2, 5, n - evidence.errors), edges=edges)
    return evidence


def median_us(call: Callable[[], object], repeats: int = 3000) -> float:
    for _ in range(100):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


canary = RolloutPlan(
    name="fraud", baseline=1, candidate=2, strategy="canary", steps=(5, 25, 50), score_edges=edges
)
steps = [
    StepEvidence(baseline=arm(19_000), candidate=arm(1000)),
    StepEvidence(baseline=arm(3000), candidate=arm(1000)),
    StepEvidence(baseline=arm(20_000), candidate=arm(20_000)),
]
collecting = [StepEvidence(baseline=arm(9500), candidate=arm(500))]
shadow = RolloutPlan(
    name="fraud", baseline=1, candidate=2, strategy="shadow", steps=(100,), score_edges=edges
)
base_scores = rng.beta(2, 5, 20_000)
pairs = PairEvidence()
pairs.record(
    baseline_predictions=base_scores > 0.5,
    candidate_predictions=base_scores > 0.5,
    baseline_scores=base_scores,
    candidate_scores=base_scores + rng.normal(0, 0.01, 20_000),
)
shadow_steps = [StepEvidence(baseline=arm(20_000), candidate=arm(20_000), pairs=pairs)]

results = {
    "canary, last step, 3 steps of evidence": median_us(lambda: judge(canary, steps, step=2)),
    "canary, collecting (before min_samples)": median_us(lambda: judge(canary, collecting, step=0)),
    "shadow, 20,000 pairs": median_us(lambda: judge(shadow, shadow_steps, step=0)),
}
for label, us in results.items():
    print(f"{label:42s} {us:8.1f} us per judge call (median of 3,000)")
