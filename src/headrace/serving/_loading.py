"""A release, loaded and warmed up: what the model pool holds for one served version.

A release answers a warm-up batch from its reference sample (a seeded sample of its
training data, stored with the release) before it takes traffic: the first real request
must not pay for lazy initialisation (ONNX Runtime and torch allocate on the first call,
scikit-learn imports submodules), and a release that cannot score its own training rows
must never be switched to.

A load comes in two steps for the model pool, which measures only the second:
`prepare_release` fetches the files, imports what the load will import and reads the
warm-up batch (the first model of a flavor must not be charged for its library), then
`load_release` loads and warms up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import ModelLoadError
from headrace.inference.arrow import columns_from_arrow
from headrace.inference.service import InferenceResult, InferenceService
from headrace.registry.store import Registry, Release
from headrace.release.features import model_inputs
from headrace.runtimes.imports import import_runtime
from headrace.runtimes.loader import load_model

WARMUP_ROWS = 64
"""Rows of the reference sample in the warm-up batch."""


@dataclass(frozen=True, slots=True)
class ServedRelease:
    """One release as the repository serves it.

    Attributes
    ----------
    service
        The inference core of the release.
    release
        The registered release (manifest and digest).
    warmup_rows
        Rows scored by the warm-up batch (0 when the release has no reference sample).
    warmup_seconds
        How long the warm-up batch took.
    prediction_datatype
        Open Inference Protocol datatype of the predictions the warm-up produced, if any.
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
    prediction_datatype: str | None
    has_scores: bool | None
    classes: tuple[str, ...] | None = None


def oip_datatype(dtype: np.dtype[Any]) -> str:
    """The Open Inference Protocol datatype of a numpy dtype (text and objects: BYTES)."""
    kind = dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'INT' if kind == 'i' else 'UINT'}{dtype.itemsize * 8}"
    if kind == "f":
        return f"FP{dtype.itemsize * 8}"
    return "BYTES"


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


def prepare_release(registry: Registry, release: Release) -> PreparedRelease:
    """Fetch a release (verifying every sha256), import the modules its load will import
    and read its warm-up batch.

    Run it outside the measured load: imports, and the arrow memory pool and reader
    modules the first parquet read sets up, are the process's memory, not the model's.
    """
    root = registry.fetch(release)
    manifest = release.manifest
    import_runtime(manifest.model.flavor, model_dir=root, entry=manifest.model.entry)
    sample = manifest.profile.sample if manifest.profile is not None else None
    if sample is None:
        return PreparedRelease(root, None)
    import pyarrow.parquet as pq

    return PreparedRelease(root, pq.read_table(root / sample.path).slice(0, WARMUP_ROWS))


def load_release(
    registry: Registry, release: Release, *, prepared: PreparedRelease | None = None
) -> ServedRelease:
    """Load and warm up a release (fetching and preparing it first unless `prepared` is
    given). CPU-bound: run it off the event loop.

    Raises
    ------
    ModelLoadError
        When the model cannot score its warm-up batch; the registry's and the runtime's
        errors (integrity, missing files, missing extras) pass through.
    """
    if prepared is None:
        prepared = prepare_release(registry, release)
    root = prepared.root
    manifest = release.manifest
    model = load_model(
        manifest.model.flavor,
        model_dir=root,
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
        return ServedRelease(service, release, 0, 0.0, None, None)
    started = time.perf_counter()
    result = service.infer(columns_from_arrow(table), n_rows=table.num_rows)
    seconds = time.perf_counter() - started
    _check_warmup(release, result, table.num_rows)
    return ServedRelease(
        service,
        release,
        warmup_rows=result.n_predicted,
        warmup_seconds=seconds,
        prediction_datatype=oip_datatype(np.asarray(result.predictions).dtype),
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
