"""The checks before any traffic: arguments, schema and feature compatibility, the warm-up
on the baseline's reference sample, and the score bins frozen into the plan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import ConfigError, RolloutError, RolloutRefusedError
from headrace.registry import Registry, Release
from headrace.release.features import FeatureSpec
from headrace.release.schema import Field, Schema
from headrace.rollout import check_arguments, check_compatible, plan_rollout, score_edges
from support.models import draft_from, local_registry, write_sklearn_release


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("compat")
    a, b = write_sklearn_release(root / "a", seed=7), write_sklearn_release(root / "b", seed=8)
    with local_registry(root) as opened:
        opened.register(draft_from(a, root), alias="champion", verification="passed")
        opened.register(draft_from(b, root), verification="passed")
        opened.register(draft_from(b, root), verification="failed", allow_duplicate=True)
        yield opened


def variant(release: Release, *, schema: Schema | None = None, **features: object) -> Release:
    manifest = release.manifest
    changed = msgspec.structs.replace(
        manifest,
        version=manifest.version + 10,
        schema=schema or manifest.schema,
        features=FeatureSpec(**features) if features else manifest.features,  # type: ignore[arg-type]
    )
    return Release(manifest=changed, digest="0" * 64)


def with_field(schema: Schema, field: Field) -> Schema:
    return Schema([*(f for f in schema.fields if f.name != field.name), field])


def test_a_compatible_candidate_gets_a_frozen_plan(registry: Registry) -> None:
    plan = plan_rollout(registry, "fraud", 2, strategy="canary", key_field="f0")
    assert (plan.baseline, plan.candidate, plan.steps) == (1, 2, (5.0, 25.0, 50.0, 100.0))
    assert plan.key_field == "f0" and len(plan.salt) == 16
    assert 1 <= len(plan.score_edges) <= 9
    assert list(plan.score_edges) == sorted(set(plan.score_edges))
    assert plan.baseline_mean_score is not None and 0 < plan.baseline_mean_score < 1
    assert plan_rollout(registry, "fraud", 2, strategy="shadow").steps == (100.0,)
    assert plan_rollout(registry, "fraud", 2, strategy="ab").steps == (50.0,)


def test_a_candidate_that_failed_verification_is_refused_with_its_plan(
    registry: Registry,
) -> None:
    with pytest.raises(RolloutRefusedError, match="fraud:3 failed verification") as caught:
        plan_rollout(registry, "fraud", 3, strategy="canary")
    assert caught.value.plan is not None


def test_bad_arguments_name_the_value_and_the_fix(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="already 'fraud@champion'"):
        plan_rollout(registry, "fraud", 1, strategy="canary")
    with pytest.raises(ConfigError, match="Key field 'user'"):
        plan_rollout(registry, "fraud", 2, strategy="canary", key_field="user")
    with pytest.raises(ConfigError, match="Invalid strategy 'blue'"):
        plan_rollout(registry, "fraud", 2, strategy="blue")


def test_limits_and_tolerances_override_the_defaults(registry: Registry) -> None:
    plan = plan_rollout(
        registry,
        "fraud",
        2,
        strategy="canary",
        min_samples=200,
        max_samples=4000,
        tolerances={"error": 0.002, "latency": 0.1, "score": 0.03, "disagreement": 0.05},
    )
    assert (plan.min_samples, plan.max_samples) == (200, 4000)
    assert (plan.error_tolerance, plan.latency_tolerance) == (0.002, 0.1)
    assert (plan.score_tolerance, plan.disagreement_tolerance) == (0.03, 0.05)
    assert plan_rollout(registry, "fraud", 2, strategy="canary").max_samples == 50_000
    with pytest.raises(ConfigError, match="--max-samples 100 is below --min-samples 200"):
        plan_rollout(registry, "fraud", 2, strategy="canary", min_samples=200, max_samples=100)
    with pytest.raises(ConfigError, match="Unknown tolerance 'speed'"):
        plan_rollout(registry, "fraud", 2, strategy="canary", tolerances={"speed": 1.0})
    for name, bad in (("error", -0.1), ("latency", 0.0), ("score", float("nan"))):
        with pytest.raises(ConfigError, match=f"Invalid --{name}-tolerance"):
            plan_rollout(registry, "fraud", 2, strategy="canary", tolerances={name: bad})


def test_no_champion_means_no_baseline(tmp_path: Path) -> None:
    files = write_sklearn_release(tmp_path / "m")
    with local_registry(tmp_path) as empty:
        empty.register(draft_from(files, tmp_path), verification="passed")
        with pytest.raises(RolloutRefusedError, match="no champion") as caught:
            plan_rollout(empty, "fraud", 1, strategy="canary")
        assert caught.value.plan is None


def test_a_running_rollout_is_refused_before_any_load(registry: Registry) -> None:
    registry.start_rollout(plan_rollout(registry, "fraud", 2, strategy="canary"))
    try:
        with pytest.raises(RolloutError, match="still running"):
            plan_rollout(registry, "fraud", 2, strategy="canary")
    finally:
        registry.abort_rollout("fraud")


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        (Field(name="f9", type="float"), "requires field 'f9'"),
        (Field(name="f0", type="int"), "field 'f0' changed type from float to int"),
    ],
)
def test_an_incompatible_schema_is_refused(registry: Registry, field: Field, reason: str) -> None:
    baseline = registry.get("fraud:1")
    candidate = variant(baseline, schema=with_field(baseline.manifest.schema, field))
    with pytest.raises(RolloutRefusedError, match=reason):
        check_compatible(baseline, candidate)


def test_an_optional_new_field_is_compatible_unless_the_model_reads_it(
    registry: Registry,
) -> None:
    baseline = registry.get("fraud:1")
    optional = Field(name="f9", type="float", required=False, nullable=True)
    schema = with_field(baseline.manifest.schema, optional)
    check_compatible(baseline, variant(baseline, schema=schema, inputs=[f"f{i}" for i in range(5)]))
    with pytest.raises(RolloutRefusedError, match="reads input 'f9'"):
        check_compatible(baseline, variant(baseline, schema=schema))


def test_a_changed_category_set_is_refused(registry: Registry) -> None:
    baseline = registry.get("fraud:1")
    old = variant(
        baseline,
        schema=with_field(
            baseline.manifest.schema, Field(name="c", type="category", values=["a", "b"])
        ),
    )
    new = variant(
        baseline,
        schema=with_field(
            baseline.manifest.schema, Field(name="c", type="category", values=["a", "z"])
        ),
    )
    with pytest.raises(RolloutRefusedError, match="changed its categories"):
        check_compatible(old, new)
    check_compatible(old, old)


def test_a_feature_view_the_baseline_lacks_is_refused(registry: Registry) -> None:
    baseline = registry.get("fraud:1")
    candidate = variant(baseline, definitions={"user_7d": {"window": "7d"}})
    with pytest.raises(RolloutRefusedError, match="user_7d"):
        check_compatible(baseline, candidate)
    check_compatible(candidate, candidate)


@settings(max_examples=200, deadline=None)
@given(
    strategy=st.sampled_from(["shadow", "canary", "ab", "blue", ""]),
    steps=st.none() | st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
    alpha=st.floats(allow_nan=True, allow_infinity=True),
    min_samples=st.integers(-5, 5),
)
def test_check_arguments_accepts_exactly_the_valid_ones(
    strategy: str, steps: list[float] | None, alpha: float, min_samples: int
) -> None:
    try:
        chosen = check_arguments(
            strategy=strategy, steps=steps, alpha=alpha, min_samples=min_samples
        )
    except ConfigError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1
        return
    assert strategy in ("shadow", "canary", "ab")
    assert 0 < alpha < 0.5 and min_samples >= 1
    assert chosen and all(0 < w <= 100 for w in chosen)
    assert list(chosen) == sorted(set(chosen))
    assert strategy == "canary" or len(chosen) == 1


def test_score_edges_are_deciles_with_ties_merged() -> None:
    assert score_edges(np.arange(1, 101, dtype=float)) == pytest.approx(
        tuple(np.quantile(np.arange(1, 101), np.linspace(0.1, 0.9, 9)))
    )
    assert score_edges(np.array([0.0] * 50 + [1.0] * 50)) == (0.0, 0.5, 1.0)
    assert score_edges(np.array([np.nan])) == ()
