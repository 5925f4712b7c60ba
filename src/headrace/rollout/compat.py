"""The checks before any traffic: may this candidate replace the baseline on this stream?

A candidate that needs a field the live stream does not carry, reads a field as another
type or category set, needs a feature view the pipeline does not provide, or cannot score
the baseline's own reference sample would fail events the moment it got any; it is
refused here, with the reason, before a single event reaches it. What passes leaves with
its plan frozen: the score bins (deciles of the baseline's scores on its reference
sample) and the baseline's mean score, which the judge's tests need from the first look.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from headrace.errors import ConfigError, HeadraceError, RolloutError, RolloutRefusedError
from headrace.inference.arrow import columns_from_arrow
from headrace.inference.loading import LoadedRelease, PreparedRelease, load_release, prepare_release
from headrace.registry import DEFAULT_ALIAS, Registry, Release
from headrace.release.features import model_inputs
from headrace.release.schema import Schema
from headrace.rollout.plan import STRATEGIES, RolloutPlan

__all__ = [
    "DEFAULT_STEPS",
    "SAMPLE_ROWS",
    "check_arguments",
    "check_compatible",
    "plan_rollout",
    "score_edges",
]

DEFAULT_STEPS: dict[str, tuple[float, ...]] = {
    "shadow": (100.0,),
    "canary": (5.0, 25.0, 50.0, 100.0),
    "ab": (50.0,),
}
"""The steps of each strategy when none are given."""

SAMPLE_ROWS = 2000
"""Rows of the baseline's reference sample both releases score before any traffic."""


def check_arguments(
    *,
    strategy: str,
    steps: Sequence[float] | None,
    alpha: float,
    min_samples: int,
) -> tuple[float, ...]:
    """Refuse arguments no rollout can run with (`ConfigError`, naming the value and the
    fix); return the steps, the strategy's defaults when `steps` is None."""
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"Invalid strategy {strategy!r}: use one of {', '.join(STRATEGIES)} (--strategy)."
        )
    chosen = DEFAULT_STEPS[strategy] if steps is None else tuple(float(s) for s in steps)
    if not chosen:
        raise ConfigError("--steps is empty: give weights in percent, e.g. --steps 5,25,50,100.")
    for weight in chosen:
        if not (math.isfinite(weight) and 0 < weight <= 100):
            raise ConfigError(
                f"Invalid step {weight:g}: weights are percents in (0, 100], e.g. --steps 5,25,50."
            )
    if any(b <= a for a, b in zip(chosen, chosen[1:], strict=False)):
        raise ConfigError(
            f"Steps {','.join(f'{w:g}' for w in chosen)} are not ascending: list each weight "
            "once, smallest first (--steps 5,25,50,100)."
        )
    if strategy != "canary" and len(chosen) != 1:
        raise ConfigError(
            f"A {strategy} rollout takes one weight, got {len(chosen)} "
            f"({','.join(f'{w:g}' for w in chosen)}): pass e.g. --steps "
            f"{DEFAULT_STEPS[strategy][0]:g}, or use --strategy canary for steps."
        )
    if not (math.isfinite(alpha) and 0 < alpha < 0.5):
        raise ConfigError(f"Invalid alpha {alpha!r}: use a probability in (0, 0.5), e.g. 0.05.")
    if min_samples < 1:
        raise ConfigError(
            f"Invalid min_samples {min_samples}: use 1 or more events per arm (--min-samples)."
        )
    return chosen


def plan_rollout(
    registry: Registry,
    name: str,
    candidate: int,
    *,
    strategy: str,
    steps: Sequence[float] | None = None,
    alpha: float = 0.05,
    min_samples: int = 1000,
    key_field: str | None = None,
    max_samples: int | None = None,
    tolerances: Mapping[str, float] | None = None,
) -> RolloutPlan:
    """Check `name:candidate` against the release ``champion`` points at and freeze the
    rollout's plan.

    `max_samples` and `tolerances` (``error``, ``latency``, ``score``, ``disagreement``:
    the `RolloutPlan` fields ending in ``_tolerance``) override the plan's defaults.

    Raises
    ------
    ConfigError
        An argument no rollout can run with (the message names it and the fix).
    ReleaseNotFoundError
        The candidate does not exist.
    RolloutError
        A rollout of `name` is still running.
    RolloutRefusedError
        The candidate failed a check; its `reason` says which, its `plan` is the plan as
        far as it was built (for `Registry.refuse_rollout`), None without a baseline.
    """
    chosen = check_arguments(strategy=strategy, steps=steps, alpha=alpha, min_samples=min_samples)
    overrides = _tolerances(tolerances or {})
    if max_samples is not None:
        overrides["max_samples"] = _max_samples(max_samples, min_samples=min_samples)
    current = registry.rollout(name)
    if current is not None and current.running:
        # Before loading anything: `Registry.start_rollout` would refuse it anyway.
        raise RolloutError(
            f"Rollout {current.id} of '{name}' (candidate {current.candidate}) is still "
            f"running: end it with `headrace rollout abort {name}` (or promote it) first."
        )
    candidate_release = registry.get(f"{name}:{candidate}")
    baseline_version = registry.aliases(name).get(DEFAULT_ALIAS)
    if baseline_version is None:
        raise RolloutRefusedError(
            f"'{name}' has no {DEFAULT_ALIAS} to compare candidate {candidate} with: point it "
            f"at the serving release first (headrace alias set {name} {DEFAULT_ALIAS} V)."
        )
    if baseline_version == candidate:
        raise ConfigError(
            f"Candidate {candidate} is already '{name}@{DEFAULT_ALIAS}': roll out another version."
        )
    baseline = registry.get(f"{name}:{baseline_version}")
    if key_field is not None and key_field not in baseline.manifest.schema.names:
        raise ConfigError(
            f"Key field '{key_field}' is not in {baseline.ref}'s schema "
            f"({', '.join(baseline.manifest.schema.names)}): name one of them, or leave "
            "--key-field out to use the pipeline's id field."
        )
    plan = RolloutPlan(
        name=name,
        baseline=baseline.version,
        candidate=candidate,
        strategy=strategy,  # type: ignore[arg-type]  # checked against STRATEGIES above
        steps=chosen,
        alpha=alpha,
        min_samples=min_samples,
        key_field=key_field,
        salt=secrets.token_hex(8),
    )
    plan = msgspec.structs.replace(
        plan, **{"max_samples": max(plan.max_samples, min_samples), **overrides}
    )
    try:
        state = registry.verification(name, candidate)
        if state in ("failed", "skipped"):
            raise RolloutRefusedError(
                f"Candidate {candidate_release.ref} {state} verification at registration, so "
                "it may not take traffic: register it again with verification."
            )
        check_compatible(baseline, candidate_release)
        edges, mean = _warm_up(registry, baseline, candidate_release)
    except RolloutRefusedError as exc:
        raise RolloutRefusedError(exc.reason, plan=plan) from exc
    return msgspec.structs.replace(plan, score_edges=edges, baseline_mean_score=mean)


def _max_samples(value: int, *, min_samples: int) -> int:
    if value < min_samples:
        raise ConfigError(
            f"--max-samples {value} is below --min-samples {min_samples}: a step must be able "
            "to reach its minimum before its maximum."
        )
    return value


_TOLERANCES = ("error", "latency", "score", "disagreement")


def _tolerances(given: Mapping[str, float]) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    for name, value in given.items():
        if name not in _TOLERANCES:
            raise ConfigError(f"Unknown tolerance '{name}': use one of {', '.join(_TOLERANCES)}.")
        if not (math.isfinite(value) and value >= 0) or (name == "latency" and value == 0):
            raise ConfigError(
                f"Invalid --{name}-tolerance {value!r}: give a finite number >= 0 "
                "(latency: > 0, a ratio such as 0.05 for 5%)."
            )
        chosen[f"{name}_tolerance"] = float(value)
    return chosen


def check_compatible(baseline: Release, candidate: Release) -> None:
    """Refuse a candidate the baseline's live stream cannot feed (`RolloutRefusedError`):
    a required field (or model input) the baseline's schema lacks, a shared field whose
    type or category set changed, a feature view the baseline does not have."""
    old, new = baseline.manifest.schema, candidate.manifest.schema
    where = f"candidate {candidate.ref} against baseline {baseline.ref}"
    for field in new.fields:
        if field.name not in old.names:
            if field.required and field.default is None:
                raise RolloutRefusedError(
                    f"{where}: the candidate requires field '{field.name}', which the "
                    "baseline's schema lacks, so the live stream does not carry it; give it a "
                    "default or make it optional, or add it to the stream and the baseline first."
                )
            continue
        before = old.field(field.name)
        if before.type != field.type:
            raise RolloutRefusedError(
                f"{where}: field '{field.name}' changed type from {before.type} to "
                f"{field.type}; the live stream carries {before.type}."
            )
        if field.type == "category" and set(before.values or ()) != set(field.values or ()):
            raise RolloutRefusedError(
                f"{where}: field '{field.name}' changed its categories from "
                f"{sorted(before.values or ())} to {sorted(field.values or ())}."
            )
    _check_inputs(where, old, candidate)
    missing = sorted(
        set(candidate.manifest.features.definitions) - set(baseline.manifest.features.definitions)
    )
    if missing:
        raise RolloutRefusedError(
            f"{where}: the candidate needs feature view(s) {', '.join(missing)}, which the "
            "baseline does not have, so the live pipeline does not provide them; "
            "materialize them and ship them with the baseline first."
        )


def _check_inputs(where: str, old: Schema, candidate: Release) -> None:
    manifest = candidate.manifest
    names = list(model_inputs(manifest.schema, manifest.features))
    signature = manifest.input_signature
    if signature is not None:
        names += [i.name for i in signature.inputs]
    for name in names:
        if name in old.names or name not in manifest.schema.names:
            continue
        field = manifest.schema.field(name)
        if field.default is None:
            raise RolloutRefusedError(
                f"{where}: the model reads input '{name}', which the baseline's schema lacks "
                "and the candidate gives no default for."
            )


def _warm_up(
    registry: Registry, baseline: Release, candidate: Release
) -> tuple[tuple[float, ...], float | None]:
    """Load and warm both releases on the baseline's reference sample (the candidate's own
    when the baseline has none); return the score edges and the baseline's mean score."""
    try:
        prepared = prepare_release(registry, baseline, warmup_rows=SAMPLE_ROWS)
        loaded = load_release(registry, baseline, prepared=prepared)
    except HeadraceError as exc:
        raise RolloutRefusedError(
            f"Baseline {baseline.ref} cannot be loaded and warmed here to compare with: {exc}"
        ) from exc
    table = prepared.warmup
    try:
        if table is None:
            load_release(registry, candidate, warmup_rows=SAMPLE_ROWS)
            return (), None
        root = prepare_release(registry, candidate, warmup_rows=0).root
        load_release(registry, candidate, prepared=PreparedRelease(root, table))
    except HeadraceError as exc:
        raise RolloutRefusedError(
            f"Candidate {candidate.ref} failed to load or to score {baseline.ref}'s reference "
            f"sample: {exc}"
        ) from exc
    return _baseline_scores(loaded, table)


def _baseline_scores(loaded: LoadedRelease, table: Any) -> tuple[tuple[float, ...], float | None]:
    result = loaded.service.infer(columns_from_arrow(table), n_rows=table.num_rows)
    if result.scores is None:
        return (), None
    scores = np.asarray(result.scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return (), None
    return score_edges(scores), float(scores.mean())


def score_edges(scores: Any) -> tuple[float, ...]:
    """Inner edges of ten score bins: the deciles of `scores`, tied edges merged."""
    values = np.asarray(scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ()
    deciles = np.quantile(values, np.linspace(0.1, 0.9, 9))
    return tuple(float(x) for x in np.unique(deciles))
