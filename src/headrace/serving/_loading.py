"""A release, loaded and warmed up: what the model pool holds for one served version.

A release answers a warm-up batch from its reference sample (a seeded sample of its
training data, stored with the release) before it takes traffic: the first real request
must not pay for lazy initialisation (ONNX Runtime and torch allocate on the first call,
scikit-learn imports submodules), and a release that cannot score its own training rows
must never be switched to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from headrace.errors import ModelLoadError
from headrace.inference.arrow import columns_from_arrow
from headrace.inference.service import InferenceResult, InferenceService
from headrace.registry.store import Registry, Release
from headrace.release.features import model_inputs
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
    """

    service: InferenceService
    release: Release
    warmup_rows: int
    warmup_seconds: float
    prediction_datatype: str | None
    has_scores: bool | None


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


def load_release(registry: Registry, release: Release) -> ServedRelease:
    """Fetch (verifying every sha256), load and warm up a release. CPU-bound: run it off
    the event loop.

    Raises
    ------
    ModelLoadError
        When the model cannot score its warm-up batch; the registry's and the runtime's
        errors (integrity, missing files, missing extras) pass through.
    """
    root = registry.fetch(release)
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
    )
    sample = manifest.profile.sample if manifest.profile is not None else None
    if sample is None:
        return ServedRelease(service, release, 0, 0.0, None, None)
    import pyarrow.parquet as pq

    table = pq.read_table(root / sample.path).slice(0, WARMUP_ROWS)
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
