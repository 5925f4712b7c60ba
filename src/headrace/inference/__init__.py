"""The inference core: one loaded release turns a columnar batch into predictions.

Every transport (stream worker, HTTP server, batch ``headrace predict``) calls the same
`InferenceService`: it validates a batch against the release schema (`validate`), lays
the valid rows out as the model's input (`model_matrix`), calls the model (retrying once
and isolating the rows that make it raise), and post-processes the output into a
prediction and a score per row (`postprocess`). Every row that gets no prediction gets a
`Rejection` saying why, at which stage. `load_release` loads, checks and warms up a
release of the registry for every caller (worker, server, ``predict``), and
`check_draft` scores a draft's training sample before it is registered, reading the
model's own signature (`resolve_signature`) so the model's column order wins; it refuses
a release whose runtime output differs from the model called as it was fitted
(`compare_outputs`). A model fitted on a DataFrame with text columns gets one
(`model_frame`). `score_file` runs the same core over CSV, Parquet
and JSON-lines files, read by `iter_input_chunks` and written by `OutputWriter`.
"""

from __future__ import annotations

from headrace.inference.arrow import columns_from_arrow
from headrace.inference.chunk import InputChunk
from headrace.inference.contract import check_draft, compare_outputs, resolve_signature
from headrace.inference.files import BatchSummary, score_file
from headrace.inference.json_batch import DecodedBatch, TypedBatchDecoder
from headrace.inference.loading import (
    WARMUP_ROWS,
    LoadedRelease,
    PreparedRelease,
    load_release,
    load_service,
    prepare_release,
    service_for_release,
)
from headrace.inference.matrix import model_frame, model_matrix
from headrace.inference.postprocess import Outputs, postprocess
from headrace.inference.readers import iter_input_chunks
from headrace.inference.service import InferenceResult, InferenceService
from headrace.inference.validate import (
    MISSING,
    Rejection,
    ValidatedBatch,
    records_to_columns,
    validate,
)
from headrace.inference.writers import OutputWriter

__all__ = [
    "MISSING",
    "WARMUP_ROWS",
    "BatchSummary",
    "DecodedBatch",
    "InferenceResult",
    "InferenceService",
    "InputChunk",
    "LoadedRelease",
    "OutputWriter",
    "Outputs",
    "PreparedRelease",
    "Rejection",
    "TypedBatchDecoder",
    "ValidatedBatch",
    "check_draft",
    "columns_from_arrow",
    "compare_outputs",
    "iter_input_chunks",
    "load_release",
    "load_service",
    "model_frame",
    "model_matrix",
    "postprocess",
    "prepare_release",
    "records_to_columns",
    "resolve_signature",
    "score_file",
    "service_for_release",
    "validate",
]
