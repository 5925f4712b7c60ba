"""The registry's rollout rows as rollout types: the plan, and evidence summed per step.

The registry sits below this part and stores plans and evidence as JSON it does not
interpret; here they become `RolloutPlan` and `StepEvidence` again, so a decider reads
``read_evidence(registry, rollout.id)[rollout.step]`` and judges the sum of every
worker's and server's rows.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from headrace.registry import Registry, RolloutState
from headrace.rollout.evidence import LATENCY_EDGES_MS, ArmEvidence, StepEvidence
from headrace.rollout.plan import RolloutPlan

__all__ = [
    "arm_summary",
    "evidence_by_instance",
    "latency_quantile_ms",
    "plan_of",
    "read_evidence",
]

_EVIDENCE = msgspec.json.Decoder(StepEvidence)


def plan_of(state: RolloutState) -> RolloutPlan:
    """The frozen plan a stored rollout runs by."""
    return msgspec.convert(state.plan, RolloutPlan)


def read_evidence(registry: Registry, rollout_id: int) -> list[StepEvidence]:
    """Evidence per step summed over every instance; index = step (a step nobody wrote
    evidence for yet is empty)."""
    summed: list[StepEvidence] = []
    for row in registry.evidence_rows(rollout_id):
        while len(summed) <= row.step:
            summed.append(StepEvidence())
        summed[row.step].add(_EVIDENCE.decode(row.evidence))
    return summed


def evidence_by_instance(
    registry: Registry, rollout_id: int, *, step: int
) -> dict[str, StepEvidence]:
    """Each instance's own evidence for `step` (which worker or server saw what)."""
    return {
        row.instance: _EVIDENCE.decode(row.evidence)
        for row in registry.evidence_rows(rollout_id)
        if row.step == step
    }


def latency_quantile_ms(counts: list[int], q: float) -> float | None:
    """The `q` quantile of a latency histogram (``LATENCY_EDGES_MS`` bins) as the upper
    edge of its bin (an upper bound within about 5%), or None before the first call."""
    total = sum(counts)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return LATENCY_EDGES_MS[min(index, len(LATENCY_EDGES_MS) - 1)]
    return LATENCY_EDGES_MS[-1]


def arm_summary(arm: ArmEvidence) -> dict[str, Any]:
    """What one arm showed, for people and ``rollout status --json``: events, errors,
    error rate, latency p50/p99 (ms), scored rows, mean and standard deviation of scores."""
    sd: float | None = None
    if arm.scored > 1:
        variance = (arm.score_sumsq - arm.score_sum**2 / arm.scored) / (arm.scored - 1)
        sd = math.sqrt(max(variance, 0.0))
    return {
        "events": arm.events,
        "errors": arm.errors,
        "error_rate": arm.error_rate,
        "latency_p50_ms": latency_quantile_ms(arm.latency_counts, 0.5),
        "latency_p99_ms": latency_quantile_ms(arm.latency_counts, 0.99),
        "scored": arm.scored,
        "mean_score": arm.mean_score if arm.scored else None,
        "score_sd": sd,
    }
