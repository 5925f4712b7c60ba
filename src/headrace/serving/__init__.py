"""Serving: the Open Inference Protocol v2 over HTTP and gRPC on the shared inference core.

Sits beside `headrace.pipeline` and never uses `headrace.streams`: a request goes through
the same validate -> predict -> postprocess path as a stream event. `ModelRepository`
turns model names into loaded, warmed-up inference services under a memory budget and
follows alias moves (promotions, rollbacks) with an atomic hot swap; the transports ask
it for a service per request.
"""

from __future__ import annotations

from headrace.serving.batching import (
    AdaptiveBatcher,
    BatchPart,
    BatchReport,
)
from headrace.serving.codec import (
    DATATYPES,
    FIELD_DATATYPES,
    OUTPUT_NAMES,
    InputTensor,
    OutputTensor,
    array_from_bytes,
    array_from_values,
    array_to_bytes,
    columns_from_inputs,
    datatype_of,
    outputs_from_part,
    raise_for_rejections,
)
from headrace.serving.errors import (
    InferenceFailedError,
    InferenceTimeoutError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    ProtocolError,
    UnauthorizedError,
    status_of,
)
from headrace.serving.repository import (
    OUTPUT_PREDICTION,
    OUTPUT_SCORE,
    ModelMetadata,
    ModelRepository,
    ModelState,
    ModelStatus,
    TensorMetadata,
)

__all__ = [
    "DATATYPES",
    "FIELD_DATATYPES",
    "OUTPUT_NAMES",
    "OUTPUT_PREDICTION",
    "OUTPUT_SCORE",
    "AdaptiveBatcher",
    "BatchPart",
    "BatchReport",
    "InferenceFailedError",
    "InferenceTimeoutError",
    "InputTensor",
    "InvalidInputError",
    "ModelMetadata",
    "ModelRepository",
    "ModelState",
    "ModelStatus",
    "NotFoundError",
    "OutputTensor",
    "OverloadedError",
    "PayloadTooLargeError",
    "ProtocolError",
    "TensorMetadata",
    "UnauthorizedError",
    "array_from_bytes",
    "array_from_values",
    "array_to_bytes",
    "columns_from_inputs",
    "datatype_of",
    "outputs_from_part",
    "raise_for_rejections",
    "status_of",
]
