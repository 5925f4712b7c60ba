"""Rollout state on every registry store (SQLite and PostgreSQL): the lease, its fencing
and the evidence upserts, with real concurrent processes' connections racing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from headrace.errors import RolloutLeaseLostError
from headrace.registry import Registry
from headrace.rollout import RolloutPlan, StepEvidence, read_evidence
from support.models import ModelFiles, draft_from, local_registry

T = TypeVar("T")


def plan() -> RolloutPlan:
    return RolloutPlan(
        name="fraud", baseline=1, candidate=2, strategy="canary", steps=(5.0, 50.0, 100.0)
    )


@pytest.fixture
def rollout_id(registry: Registry, files: ModelFiles, tmp_path: Path) -> int:
    registry.register(draft_from(files, tmp_path), alias="champion", verification="passed")
    registry.register(draft_from(files, tmp_path), verification="passed", allow_duplicate=True)
    return registry.start_rollout(plan()).id


def race(registry: Registry, tmp_path: Path, calls: list[Callable[[Registry], T]]) -> list[T]:
    """Run each call in its own thread on its own `Registry` (own connection pool), all
    released at once by a barrier."""
    barrier = threading.Barrier(len(calls))
    opened = [
        local_registry(tmp_path, url=registry.url, actor=f"racer{i}") for i in range(len(calls))
    ]

    def one(index: int) -> T:
        barrier.wait()
        return calls[index](opened[index])

    try:
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(one, range(len(calls))))
    finally:
        for each in opened:
            each.close()


def test_racing_holders_get_one_lease_per_expiry(
    registry: Registry, rollout_id: int, tmp_path: Path
) -> None:
    epochs: list[int] = []
    for round_ in range(12):
        at = 1000.0 + 100.0 * round_  # every earlier lease (ttl 50) has expired
        got = race(
            registry,
            tmp_path,
            [
                lambda r, h=h, at=at: r.acquire_lease(rollout_id, holder=h, ttl_s=50, at=at)
                for h in ("host:1:a", "host:2:b", "host:3:c")
            ],
        )
        winners = [epoch for epoch in got if epoch is not None]
        assert len(winners) == 1, got
        epochs.append(winners[0])
    assert epochs == sorted(epochs) and epochs[-1] <= 12
    state = registry.rollout("fraud")
    assert state is not None and state.lease_epoch == epochs[-1]


def test_only_the_current_epoch_decides(
    registry: Registry, rollout_id: int, tmp_path: Path
) -> None:
    old = registry.acquire_lease(rollout_id, holder="old", ttl_s=10, at=100.0)
    new = registry.acquire_lease(rollout_id, holder="new", ttl_s=10, at=200.0)
    assert old is not None and new is not None and new > old

    def decide(holder: str, epoch: int) -> Callable[[Registry], str]:
        def call(r: Registry) -> str:
            try:
                r.decide(
                    rollout_id,
                    holder=holder,
                    epoch=epoch,
                    decision="next_step",
                    reason=holder,
                    evidence={"by": holder},
                    next_step=1,
                    at=201.0,
                )
            except RolloutLeaseLostError:
                return "fenced"
            return "decided"

        return call

    assert race(registry, tmp_path, [decide("old", old), decide("new", new)]) == [
        "fenced",
        "decided",
    ]
    assert [v.holder for v in registry.verdicts(rollout_id)] == ["new"]
    state = registry.rollout("fraud")
    assert state is not None and state.step == 1
    registry.verify_audit()


def test_concurrent_evidence_upserts_keep_one_row_per_instance_and_step(
    registry: Registry, rollout_id: int, tmp_path: Path
) -> None:
    def writer(instance: str) -> Callable[[Registry], None]:
        def call(r: Registry) -> None:
            for total in range(1, 21):  # cumulative totals: the last write wins
                evidence = StepEvidence()
                evidence.baseline.events = total
                evidence.candidate.events = total * 2
                r.write_evidence(rollout_id, instance=instance, step=0, evidence=evidence)

        return call

    race(registry, tmp_path, [writer(f"host:{i}:x") for i in range(4)])
    (step,) = read_evidence(registry, rollout_id)
    assert (step.baseline.events, step.candidate.events) == (80, 160)
    assert len(registry.evidence_rows(rollout_id)) == 4
