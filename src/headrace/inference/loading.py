"""The one way to load a release: prepare, load, check and warm it, for every caller.

The stream worker, ``headrace predict``, the HTTP and gRPC servers (and, later, a rollout
loading its candidate beside the champion) all call `load_release`, so a release that
serves in one place serves the same way in the others.

A release answers a warm-up batch from its reference sample (a seeded sample of its
training data, stored with the release) before it takes traffic: the first real event or
request must not pay for lazy initialisation (ONNX Runtime and torch allocate on the first
call, scikit-learn imports submodules), and a release that cannot score its own training
rows must never be switched to.

A load comes in two steps so that a model pool can measure only the second:
`prepare_release` fetches the files (verifying every sha256), imports what the load will
import and reads the warm-up batch (the first model of a flavor must not be charged for
its library), then `load_release` loads, checks and warms up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import ConfigError, ModelLoadError
from headrace.inference.arrow import columns_from_arrow
from headrace.inference.service import InferenceResult, InferenceService
from headrace.registry.refs import ReleaseRef
from headrace.registry.store import Registry, Release
from headrace.release.features import model_inputs
from headrace.runtimes.imports import import_runtime
from headrace.runtimes.loader import load_model

__all__ = [
    "WARMUP_ROWS",
    "LoadedRelease",
    "PreparedRelease",
    "load_release",
    "load_service",
    "prepare_release",
    "service_for_release",
]

WARMUP_ROWS = 64
"""Rows of the reference sample in the warm-up batch, unless a caller asks otherwise."""


@dataclass(frozen=True, slots=True)
class PreparedRelease:
    """What `prepare_release` did ahead of the measured load.

    Attributes
    ----------
    root
        The release's local directory, fetched and verified.
    warmup
        The warm-up batch read from the reference sample (a pyarrow table), or None.
    """

    root: Path
    warmup: Any


@dataclass(frozen=True, slots=True)
class LoadedRelease:
    """One release, loaded, checked and warmed up.

    Attributes
    ----------
    service
        The inference core of the release.
    release
        The registered release (manifest and digest).
    warmup_rows
        Rows scored by the warm-up batch (0 when there was no warm-up).
    warmup_seconds
        How long the warm-up batch took.
    prediction_dtype
        The numpy dtype of the predictions the warm-up produced, or None (no warm-up).
    has_scores
        Whether the warm-up produced scores (None when there was no warm-up).
    classes
        The class names of the probabilities the warm-up produced (the ``probabilities``
        output's columns), or None (no probabilities, or no warm-up).
    """

    service: InferenceService
    release: Release
    warmup_rows: int
    warmup_seconds: float
    prediction_dtype: np.dtype[Any] | None
    has_scores: bool | None
    classes: tuple[str, ...] | None = None


def prepare_release(
    registry: Registry, release: Release, *, warmup_rows: int = WARMUP_ROWS
) -> PreparedRelease:
    """Fetch a release (verifying every sha256), import the modules its load will import
    and read its warm-up batch (`warmup_rows` rows of the reference sample; 0 reads none).

    Run it outside a measured load: imports, and the arrow memory pool and reader modules
    the first parquet read sets up, are the process's memory, not the model's.
    """
    if warmup_rows < 0:
        raise ConfigError(
            f"warmup_rows must be 0 or more, got {warmup_rows}: pass 0 to skip the warm-up."
        )
    root = registry.fetch(release)
    manifest = release.manifest
    import_runtime(manifest.model.flavor, model_dir=root, entry=manifest.model.entry)
    sample = manifest.profile.sample if manifest.profile is not None else None
    if sample is None or warmup_rows == 0:
        return PreparedRelease(root, None)
    import pyarrow.parquet as pq

    return PreparedRelease(root, pq.read_table(root / sample.path).slice(0, warmup_rows))


def load_release(
    registry: Registry,
    release: Release | ReleaseRef | str,
    *,
    warmup_rows: int = WARMUP_ROWS,
    prepared: PreparedRelease | None = None,
) -> LoadedRelease:
    """Load, check and warm up a release: the one loader every caller shares.

    CPU-bound: run it off an event loop.

    Parameters
    ----------
    release
        A registered release, or its ``name:version`` / ``name@alias``.
    warmup_rows
        Rows of the reference sample scored before the release is handed out (0: no
        warm-up and no check, as a one-off batch job may choose).
    prepared
        What `prepare_release` already did (a model pool prepares outside its measured
        load); None prepares here.

    Raises
    ------
    ModelLoadError
        When the model cannot score its warm-up batch; the registry's and the runtime's
        errors (unknown release, integrity, missing files, missing extras) pass through.
    """
    if not isinstance(release, Release):
        release = registry.get(release)
    if prepared is None:
        prepared = prepare_release(registry, release, warmup_rows=warmup_rows)
    manifest = release.manifest
    model = load_model(
        manifest.model.flavor,
        model_dir=prepared.root,
        entry=manifest.model.entry,
        options=dict(manifest.config.runtime),
    )
    service = InferenceService(
        model,
        schema=manifest.schema,
        inputs=model_inputs(manifest.schema, manifest.features),
        config=manifest.config,
        release=manifest.ref,
        release_digest=release.digest,
        signature=manifest.input_signature,
    )
    table = prepared.warmup
    if table is None:
        return LoadedRelease(service, release, 0, 0.0, None, None)
    started = time.perf_counter()
    result = service.infer(columns_from_arrow(table), n_rows=table.num_rows)
    seconds = time.perf_counter() - started
    _check_warmup(release, result, table.num_rows)
    return LoadedRelease(
        service,
        release,
        warmup_rows=result.n_predicted,
        warmup_seconds=seconds,
        prediction_dtype=np.asarray(result.predictions).dtype,
        has_scores=result.scores is not None,
        classes=result.classes if result.probabilities is not None else None,
    )


def _check_warmup(release: Release, result: InferenceResult, rows: int) -> None:
    failed = [r for r in result.rejections if r.stage == "predict"]
    if failed or (rows and not result.n_predicted):
        first = (failed or result.rejections)[0]
        raise ModelLoadError(
            f"Release {release.ref} failed its warm-up: {len(result.rejections)} of {rows} "
            f"rows of its reference sample were rejected, e.g. row {first.row} at stage "
            f"{first.stage}: {first.reason}. Fix the model (or its schema) and register a "
            "new release; the previous one keeps serving."
        )


def service_for_release(registry: Registry, release: Release) -> InferenceService:
    """The inference core of a release, without a warm-up (`load_release` with
    ``warmup_rows=0``): for callers that score once and need no first-call latency."""
    return load_release(registry, release, warmup_rows=0).service


def load_service(registry: Registry, ref: str | ReleaseRef) -> InferenceService:
    """The inference core for ``name:version`` / ``name@alias``, without a warm-up."""
    return load_release(registry, ref, warmup_rows=0).service
