"""Rollout state in the SQLite registry: migration, one running rollout per name, the
fenced lease, evidence upserts, throttled verdicts, promotion through the alias history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError

from headrace.errors import (
    ConfigError,
    ReleaseError,
    ReleaseNotFoundError,
    RolloutError,
    RolloutLeaseLostError,
)
from headrace.registry import Registry, tables
from headrace.rollout import RolloutPlan, StepEvidence, plan_of, read_evidence
from headrace.rollout.state import evidence_by_instance
from support.models import ModelFiles, draft_from, local_registry, write_sklearn_release


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelFiles, ModelFiles]:
    root = tmp_path_factory.mktemp("models")
    return write_sklearn_release(root / "a", seed=7), write_sklearn_release(root / "b", seed=8)


def _register_two(registry: Registry, models: tuple[ModelFiles, ModelFiles], where: Path) -> None:
    registry.register(draft_from(models[0], where), alias="champion", verification="passed")
    registry.register(draft_from(models[1], where), verification="passed")


@pytest.fixture
def registry(tmp_path: Path, models: tuple[ModelFiles, ModelFiles]) -> Iterator[Registry]:
    with local_registry(tmp_path) as opened:
        _register_two(opened, models, tmp_path)
        yield opened


def plan(**changes: object) -> RolloutPlan:
    values: dict[str, object] = {
        "name": "fraud",
        "baseline": 1,
        "candidate": 2,
        "strategy": "canary",
        "steps": (5.0, 25.0, 50.0, 100.0),
        "salt": "ab12",
    }
    values.update(changes)
    return RolloutPlan(**values)  # type: ignore[arg-type]


def actions(registry: Registry) -> list[str]:
    return [r.action for r in registry.audit_log()]


def test_a_v3_registry_migrates_and_keeps_its_releases(
    tmp_path: Path, models: tuple[ModelFiles, ModelFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(tables, "MIGRATIONS", tables.MIGRATIONS[:3])
        patch.setattr(tables, "SCHEMA_VERSION", 3)
        with local_registry(tmp_path) as old:
            _register_two(old, models, tmp_path)
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT max(version) FROM headrace_schema_version")).scalar() == 3
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
        assert "headrace_rollouts" not in names
    with local_registry(tmp_path) as registry:
        assert [r.version for r in registry.list_releases("fraud")] == [1, 2]
        state = registry.start_rollout(plan())
        assert (state.state, state.step, state.weight) == ("running", 0, 5.0)
        assert registry.verify_audit() == 4  # two registrations, one alias move, one start
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM headrace_schema_version")).scalars()
        assert sorted(versions) == [1, 2, 3, 4]
    engine.dispose()


def test_start_stores_the_plan_and_audits_it(registry: Registry) -> None:
    state = registry.start_rollout(plan(), reason="retrained")
    assert state.running and (state.baseline, state.candidate) == (1, 2)
    assert plan_of(state) == plan()
    assert registry.rollout("fraud") == state
    assert registry.active_rollouts() == [state]
    record = registry.audit_log(action="rollout.start")[0]
    assert record.subject == f"fraud:rollout/{state.id}"
    assert record.details["reason"] == "retrained"
    assert record.details["plan"]["steps"] == [5.0, 25.0, 50.0, 100.0]


def test_a_second_running_rollout_of_a_name_is_refused(registry: Registry) -> None:
    first = registry.start_rollout(plan())
    with pytest.raises(RolloutError, match=r"Rollout \d+ of 'fraud'") as caught:
        registry.start_rollout(plan(salt="other"))
    assert "headrace rollout abort fraud" in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1
    assert registry.active_rollouts() == [first]
    registry.abort_rollout("fraud", reason="changed my mind")
    assert registry.start_rollout(plan()).running  # once ended, a new one may start


def test_the_database_refuses_a_second_running_row_too(registry: Registry) -> None:
    registry.start_rollout(plan())
    engine = create_engine(registry.url)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        row = conn.execute(select(tables.rollouts)).mappings().one()
        conn.execute(tables.rollouts.insert().values({**row, "id": None}))
    engine.dispose()


def test_start_needs_both_versions_and_a_verified_candidate(
    registry: Registry, models: tuple[ModelFiles, ModelFiles], tmp_path: Path
) -> None:
    with pytest.raises(ReleaseNotFoundError):
        registry.start_rollout(plan(candidate=9))
    registry.register(draft_from(models[1], tmp_path), verification="failed", allow_duplicate=True)
    with pytest.raises(ReleaseError, match="failed verification"):
        registry.start_rollout(plan(candidate=3))
    assert registry.active_rollouts() == []


def test_a_refusal_is_recorded_and_audited_but_never_runs(registry: Registry) -> None:
    refused = registry.refuse_rollout(plan(), "schema: field 'x' missing")
    assert (refused.state, refused.reason) == ("refused", "schema: field 'x' missing")
    assert refused.ended_at is not None
    assert registry.active_rollouts() == []
    assert registry.rollout("fraud") == refused
    assert "rollout.refuse" in actions(registry)
    assert registry.start_rollout(plan()).running


def test_two_holders_one_lease_and_a_takeover_after_expiry_fences_the_first(
    registry: Registry,
) -> None:
    rollout = registry.start_rollout(plan())
    first = registry.acquire_lease(rollout.id, holder="host:1:a", ttl_s=10, at=1000.0)
    assert first == 1
    assert registry.acquire_lease(rollout.id, holder="host:2:b", ttl_s=10, at=1005.0) is None
    assert registry.acquire_lease(rollout.id, holder="host:1:a", ttl_s=10, at=1009.0) == first
    # a's renewal ran to 1019; b takes over only after it lapses, with a new epoch
    assert registry.acquire_lease(rollout.id, holder="host:2:b", ttl_s=10, at=1018.0) is None
    second = registry.acquire_lease(rollout.id, holder="host:2:b", ttl_s=10, at=1020.0)
    assert second == 2
    with pytest.raises(RolloutLeaseLostError, match="host:1:a"):
        registry.decide(
            rollout.id,
            holder="host:1:a",
            epoch=first,
            decision="next_step",
            reason="stale",
            evidence={},
            next_step=1,
            at=1021.0,
        )
    after = registry.rollout("fraud")
    assert after is not None and after.step == 0 and after.revision == rollout.revision
    assert registry.verdicts(rollout.id) == []
    moved = registry.decide(
        rollout.id,
        holder="host:2:b",
        epoch=second,
        decision="next_step",
        reason="enough evidence, no harm",
        evidence={"events": 1000},
        next_step=1,
        at=1022.0,
    )
    assert (moved.step, moved.weight) == (1, 25.0)
    assert moved.revision > rollout.revision
    # the same holder with an old epoch number is stale too
    with pytest.raises(RolloutLeaseLostError):
        registry.decide(
            rollout.id,
            holder="host:2:b",
            epoch=first,
            decision="continue",
            reason="",
            evidence={},
            at=1023.0,
        )


def test_an_ended_rollout_has_no_lease_to_take(registry: Registry) -> None:
    rollout = registry.start_rollout(plan())
    epoch = registry.acquire_lease(rollout.id, holder="h", ttl_s=5, at=1.0)
    assert epoch is not None
    registry.abort_rollout("fraud")
    assert registry.acquire_lease(rollout.id, holder="h", ttl_s=5, at=2.0) is None
    with pytest.raises(RolloutLeaseLostError, match="state aborted"):
        registry.decide(
            rollout.id, holder="h", epoch=epoch, decision="continue", reason="", evidence={}
        )


def test_a_released_lease_is_taken_at_once(registry: Registry) -> None:
    rollout = registry.start_rollout(plan())
    epoch = registry.acquire_lease(rollout.id, holder="a", ttl_s=60, at=1.0)
    assert epoch is not None
    assert not registry.release_lease(rollout.id, holder="b", epoch=epoch)
    assert registry.release_lease(rollout.id, holder="a", epoch=epoch)
    assert registry.acquire_lease(rollout.id, holder="b", ttl_s=60, at=2.0) == epoch + 1


def test_a_lease_needs_a_positive_ttl(registry: Registry) -> None:
    rollout = registry.start_rollout(plan())
    with pytest.raises(ConfigError, match="ttl_s"):
        registry.acquire_lease(rollout.id, holder="a", ttl_s=0)


def _evidence(baseline: int, candidate: int, *, latency: float = 2.0) -> StepEvidence:
    evidence = StepEvidence()
    evidence.baseline.events, evidence.candidate.events = baseline, candidate
    evidence.candidate.errors = 1
    evidence.baseline.record_calls([latency])
    evidence.candidate.record_calls([latency])
    return evidence


def test_evidence_is_upserted_per_instance_and_summed_per_step(registry: Registry) -> None:
    rollout = registry.start_rollout(plan())
    registry.write_evidence(rollout.id, instance="w1", step=0, evidence=_evidence(10, 1))
    registry.write_evidence(rollout.id, instance="w2", step=0, evidence=_evidence(20, 2))
    # cumulative totals: a later write replaces the instance's row, never adds to it
    registry.write_evidence(rollout.id, instance="w1", step=0, evidence=_evidence(30, 3))
    registry.write_evidence(rollout.id, instance="w2", step=1, evidence=_evidence(5, 5))
    steps = read_evidence(registry, rollout.id)
    assert [(s.baseline.events, s.candidate.events) for s in steps] == [(50, 5), (5, 5)]
    assert steps[0].candidate.errors == 2
    assert sum(steps[0].baseline.latency_counts) == 2
    mine = evidence_by_instance(registry, rollout.id, step=0)
    assert {k: v.baseline.events for k, v in mine.items()} == {"w1": 30, "w2": 20}
    assert read_evidence(registry, rollout.id + 1) == []


def test_continue_verdicts_are_stored_every_30_s_and_audited_every_minute(
    registry: Registry,
) -> None:
    rollout = registry.start_rollout(plan())
    epoch = registry.acquire_lease(rollout.id, holder="h", ttl_s=1e6, at=0.0)
    assert epoch is not None
    for at in (100.0, 110.0, 129.9, 130.0, 159.0, 160.0, 161.0):
        registry.decide(
            rollout.id,
            holder="h",
            epoch=epoch,
            decision="continue",
            reason="not enough evidence",
            evidence={"events": int(at)},
            at=at,
        )
    stored = registry.verdicts(rollout.id)
    assert [v.at for v in stored] == [100.0, 130.0, 160.0]
    assert stored[0].evidence == {"events": 100} and stored[0].holder == "h"
    audited = registry.audit_log(action="rollout.verdict")
    assert [r.details["evidence"]["events"] for r in audited] == [100, 160]
    state = registry.rollout("fraud")
    assert state is not None and state.revision == rollout.revision  # nothing changed
    registry.decide(
        rollout.id,
        holder="h",
        epoch=epoch,
        decision="next_step",
        reason="ok",
        evidence={"events": 1},
        next_step=1,
        at=161.5,
    )
    assert len(registry.verdicts(rollout.id)) == 4
    assert len(registry.audit_log(action="rollout.verdict")) == 3
    assert registry.rollout_revision() > rollout.revision


def test_promotion_moves_champion_through_the_alias_history_and_audit(registry: Registry) -> None:
    rollout = registry.start_rollout(plan())
    epoch = registry.acquire_lease(rollout.id, holder="h", ttl_s=30)
    assert epoch is not None
    ended = registry.decide(
        rollout.id,
        holder="h",
        epoch=epoch,
        decision="promote",
        reason="non-inferior on every metric",
        evidence={"error_rate": [0.001, 0.001]},
        end_state="promoted",
    )
    assert (ended.state, ended.reason) == ("promoted", "non-inferior on every metric")
    assert ended.ended_at is not None and registry.active_rollouts() == []
    assert registry.aliases("fraud")["champion"] == 2
    moved = registry.alias_history("fraud", "champion")[-1]
    assert (moved.from_version, moved.to_version, moved.kind) == (1, 2, "rollout")
    assert actions(registry)[-2:] == ["alias.set", "rollout.verdict"]
    verdict = registry.audit_log(action="rollout.verdict")[-1]
    assert verdict.details["state"] == "promoted"
    assert verdict.details["evidence"] == {"error_rate": [0.001, 0.001]}
    registry.verify_audit()  # the replayed alias moves match the table
    assert registry.rollback("fraud").to_version == 1  # `headrace rollback` still works


def test_rollback_keeps_champion_on_the_baseline_or_moves_it_back(registry: Registry) -> None:
    rollout = registry.start_rollout(plan())
    epoch = registry.acquire_lease(rollout.id, holder="h", ttl_s=30)
    assert epoch is not None
    history = len(registry.alias_history("fraud"))
    registry.decide(
        rollout.id,
        holder="h",
        epoch=epoch,
        decision="rollback",
        reason="errors",
        evidence={},
        end_state="rolled_back",
    )
    assert registry.aliases("fraud")["champion"] == 1
    assert len(registry.alias_history("fraud")) == history  # nothing to move
    registry.verify_audit()


@pytest.mark.parametrize("how", ["alias set", "rollback"])
def test_a_hand_move_of_champion_aborts_the_running_rollout(registry: Registry, how: str) -> None:
    # Its baseline no longer serves; a lease holder promoting later would undo the move.
    if how == "rollback":  # a history to roll back along: 1 -> 2 -> 1
        registry.set_alias("fraud", "champion", 2)
        registry.set_alias("fraud", "champion", 1)
    rollout = registry.start_rollout(plan())
    epoch = registry.acquire_lease(rollout.id, holder="h", ttl_s=30)
    assert epoch is not None
    if how == "alias set":
        registry.set_alias("fraud", "champion", 2, reason="by hand, mid-rollout")
        target = 2
    else:
        registry.set_alias("fraud", "challenger", 2, reason="another alias: no abort")
        assert registry.rollout("fraud").state == "running"  # type: ignore[union-attr]
        registry.rollback("fraud", reason="back to the previous")
        target = 2
    ended = registry.rollout("fraud")
    assert ended is not None and ended.state == "aborted"
    assert ended.reason == f"champion moved by hand to fraud:{target}"
    with pytest.raises(RolloutLeaseLostError):
        registry.decide(
            rollout.id, holder="h", epoch=epoch, decision="promote", reason="", evidence={},
            end_state="promoted",
        )  # fmt: skip
    assert registry.aliases("fraud")["champion"] == target
    assert "rollout.abort" in set(actions(registry))
    registry.verify_audit()


def test_decide_refuses_an_unknown_end_state_or_step(registry: Registry) -> None:
    rollout = registry.start_rollout(plan(steps=(5.0, 50.0)))
    epoch = registry.acquire_lease(rollout.id, holder="h", ttl_s=30)
    assert epoch is not None
    with pytest.raises(ConfigError, match="'done'"):
        registry.decide(
            rollout.id, holder="h", epoch=epoch, decision="x", reason="", evidence={},
            end_state="done",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="Step 2 is outside"):
        registry.decide(
            rollout.id, holder="h", epoch=epoch, decision="x", reason="", evidence={}, next_step=2
        )


def test_manual_promote_and_abort(registry: Registry) -> None:
    with pytest.raises(RolloutError, match="No running rollout of 'fraud'"):
        registry.promote_rollout("fraud")
    rollout = registry.start_rollout(plan())
    aborted = registry.abort_rollout("fraud", reason="not today")
    assert (aborted.state, aborted.reason) == ("aborted", "not today")
    assert registry.aliases("fraud")["champion"] == 1
    registry.start_rollout(plan())
    promoted = registry.promote_rollout("fraud")
    assert promoted.state == "promoted" and registry.aliases("fraud")["champion"] == 2
    assert [v.decision for v in registry.verdicts(promoted.id)] == ["promote"]
    assert registry.verdicts(rollout.id)[0].holder.startswith("manual:")
    assert {"rollout.abort", "rollout.promote"} <= set(actions(registry))
    registry.verify_audit()


def test_the_revision_grows_on_every_start_step_and_end(registry: Registry) -> None:
    seen = [registry.rollout_revision()]
    rollout = registry.start_rollout(plan())
    seen.append(registry.rollout_revision())
    epoch = registry.acquire_lease(rollout.id, holder="h", ttl_s=30)
    assert epoch is not None
    registry.decide(
        rollout.id, holder="h", epoch=epoch, decision="next", reason="", evidence={}, next_step=1
    )
    seen.append(registry.rollout_revision())
    registry.abort_rollout("fraud")
    seen.append(registry.rollout_revision())
    assert seen == sorted(set(seen)) and seen[0] == 0


def test_a_judges_numpy_statistics_are_stored_and_audited_as_json(registry: Registry) -> None:
    import numpy as np

    rollout = registry.start_rollout(plan())
    epoch = registry.acquire_lease(rollout.id, holder="h", ttl_s=30)
    assert epoch is not None
    evidence = {"n": np.int64(1200), "bounds": np.array([0.5, 1.5]), "log_e": float("nan")}
    registry.decide(
        rollout.id,
        holder="h",
        epoch=epoch,
        decision="next_step",
        reason="ok",
        evidence=evidence,
        next_step=1,
    )
    (stored,) = registry.verdicts(rollout.id)
    assert stored.evidence == {"n": 1200, "bounds": [0.5, 1.5], "log_e": None}
    assert registry.audit_log(action="rollout.verdict")[0].details["evidence"]["n"] == 1200
    registry.verify_audit()


def test_a_verdict_on_a_step_the_rollout_left_is_refused(registry: Registry) -> None:
    rollout = registry.start_rollout(plan())
    old = registry.acquire_lease(rollout.id, holder="a", ttl_s=10, at=0.0)
    assert old is not None
    seen = registry.rollout("fraud")  # b reads step 0 while a still holds the lease...
    registry.decide(
        rollout.id, holder="a", epoch=old, decision="next_step", reason="", evidence={},
        next_step=1, step=0, at=1.0,
    )  # fmt: skip
    new = registry.acquire_lease(rollout.id, holder="b", ttl_s=10, at=20.0)
    assert new is not None and seen is not None
    with pytest.raises(RolloutLeaseLostError, match="judged step 0"):  # ...and judges it late
        registry.decide(
            rollout.id, holder="b", epoch=new, decision="promote", reason="", evidence={},
            end_state="promoted", step=seen.step, at=21.0,
        )  # fmt: skip
    after = registry.rollout("fraud")
    assert after is not None and (after.state, after.step) == ("running", 1)
