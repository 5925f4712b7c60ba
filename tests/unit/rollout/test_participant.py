"""Participants: each writes its own totals, one at a time decides, a stopping holder hands
the lease over at once, and a rollback verdict ends the rollout with champion on the baseline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from headrace.registry import Registry
from headrace.rollout import RolloutParticipant, RolloutPlan, StepEvidence, read_evidence
from support.models import ModelFiles, draft_from, local_registry, write_sklearn_release


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelFiles, ModelFiles]:
    root = tmp_path_factory.mktemp("models")
    return write_sklearn_release(root / "a", seed=7), write_sklearn_release(root / "b", seed=8)


@pytest.fixture
def registry(tmp_path: Path, models: tuple[ModelFiles, ModelFiles]) -> Iterator[Registry]:
    with local_registry(tmp_path) as opened:
        opened.register(draft_from(models[0], tmp_path), alias="champion", verification="passed")
        opened.register(draft_from(models[1], tmp_path), verification="passed")
        yield opened


def start(registry: Registry, **changes: object) -> int:
    values: dict[str, object] = {
        "name": "fraud",
        "baseline": 1,
        "candidate": 2,
        "strategy": "canary",
        "steps": (50.0, 100.0),
        "salt": "s",
        "min_samples": 200,
    }
    values.update(changes)
    return registry.start_rollout(RolloutPlan(**values)).id  # type: ignore[arg-type]


def batch(*, events: int, baseline_errors: int, candidate_errors: int) -> StepEvidence:
    evidence = StepEvidence()
    for arm, errors in (
        (evidence.baseline, baseline_errors),
        (evidence.candidate, candidate_errors),
    ):
        arm.events += events
        arm.errors += errors
        arm.record_calls(np.full(events // 50, 1.0))
    return evidence


def test_each_writes_its_totals_and_one_decides(registry: Registry) -> None:
    rollout = start(registry)
    a = RolloutParticipant(registry, instance="worker:a")
    b = RolloutParticipant(registry, instance="worker:b")
    a.record(rollout, 0, batch(events=30, baseline_errors=0, candidate_errors=0))
    a.record(rollout, 0, batch(events=20, baseline_errors=0, candidate_errors=0))
    b.record(rollout, 0, batch(events=40, baseline_errors=1, candidate_errors=0))
    a.tick()
    b.tick()
    b.tick()  # rewriting totals never double counts
    (summed,) = read_evidence(registry, rollout)
    assert summed.baseline.events == summed.candidate.events == 90
    assert summed.baseline.errors == 1
    state = registry.rollout("fraud")
    assert state is not None and state.lease_holder == "worker:a"  # b found it held
    assert {v.holder for v in registry.verdicts(rollout)} <= {"worker:a"}
    a.stop()  # hands the lease over at once, without waiting for it to lapse
    b.tick()
    state = registry.rollout("fraud")
    assert state is not None and state.lease_holder == "worker:b"


def test_a_failing_candidate_is_rolled_back_by_the_holder(registry: Registry) -> None:
    rollout = start(registry)
    participant = RolloutParticipant(registry, instance="worker:a")
    for _ in range(5):
        participant.record(rollout, 0, batch(events=100, baseline_errors=0, candidate_errors=20))
    participant.tick()
    state = registry.rollout("fraud")
    assert state is not None and state.state == "rolled_back"
    assert registry.aliases("fraud")["champion"] == 1
    (verdict,) = [v for v in registry.verdicts(rollout) if v.decision != "continue"]
    assert verdict.decision == "rollback" and verdict.holder == "worker:a"
    assert "error rate" in verdict.reason
    audited = [r for r in registry.audit_log() if r.action == "rollout.verdict"]
    assert [r.details["decision"] for r in audited][-1] == "rollback"
    assert audited[-1].details["state"] == "rolled_back"
    registry.verify_audit()
    participant.stop()


def test_an_equal_candidate_moves_to_the_next_step_and_the_holder_is_fenced_by_it(
    registry: Registry,
) -> None:
    rollout = start(registry, steps=(25.0, 50.0, 100.0))
    participant = RolloutParticipant(registry, instance="worker:a")
    participant.record(rollout, 0, batch(events=300, baseline_errors=3, candidate_errors=3))
    participant.tick()
    state = registry.rollout("fraud")
    assert state is not None and (state.state, state.step) == ("running", 1)
    # evidence of the new step starts from nothing: the judge sees step 1 collecting
    participant.tick()
    steps = read_evidence(registry, rollout)
    assert len(steps) == 1  # nothing recorded for step 1 yet
    participant.stop()
