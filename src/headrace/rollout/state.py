"""The registry's rollout rows as rollout types: the plan, and evidence summed per step.

The registry sits below this part and stores plans and evidence as JSON it does not
interpret; here they become `RolloutPlan` and `StepEvidence` again, so a decider reads
``read_evidence(registry, rollout.id)[rollout.step]`` and judges the sum of every
worker's and server's rows.
"""

from __future__ import annotations

import msgspec

from headrace.registry import Registry, RolloutState
from headrace.rollout.evidence import StepEvidence
from headrace.rollout.plan import RolloutPlan

__all__ = ["evidence_by_instance", "plan_of", "read_evidence"]

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
