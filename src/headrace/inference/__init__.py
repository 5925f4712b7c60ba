"""The inference core: one loaded release turns a columnar batch into predictions.

Every transport (stream worker, HTTP server, batch ``headrace predict``) calls the same
`InferenceService`: it validates a batch against the release schema (`validate`), lays
the valid rows out as the model's input (`model_matrix`), calls the model (retrying once
and isolating the rows that make it raise), and post-processes the output into a
prediction and a score per row (`postprocess`). Every row that gets no prediction gets a
`Rejection` saying why, at which stage. `score_file` and its readers and writers run the
same core over CSV, Parquet and JSON-lines files.
"""

from __future__ import annotations

from headrace.inference.files import (
    BatchSummary,
    InputChunk,
    OutputWriter,
    columns_from_arrow,
    iter_input_chunks,
    score_file,
)
from headrace.inference.matrix import model_matrix
from headrace.inference.postprocess import Outputs, postprocess
from headrace.inference.service import InferenceResult, InferenceService
from headrace.inference.validate import (
    MISSING,
    Rejection,
    ValidatedBatch,
    records_to_columns,
    validate,
)

__all__ = [
    "MISSING",
    "BatchSummary",
    "InferenceResult",
    "InferenceService",
    "InputChunk",
    "OutputWriter",
    "Outputs",
    "Rejection",
    "ValidatedBatch",
    "columns_from_arrow",
    "iter_input_chunks",
    "model_matrix",
    "postprocess",
    "records_to_columns",
    "score_file",
    "validate",
]
