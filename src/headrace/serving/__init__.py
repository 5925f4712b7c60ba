"""Serving: the Open Inference Protocol v2 over HTTP and gRPC on the shared inference core.

Sits beside `headrace.pipeline` and never uses `headrace.streams`: a request goes through
the same validate -> predict -> postprocess path as a stream event. `ModelRepository`
turns model names into loaded, warmed-up inference services under a memory budget and
follows alias moves (promotions, rollbacks) with an atomic hot swap. `DataPlane` is what
a request means (inference through the adaptive batchers, metadata, readiness, the
lifecycle); the HTTP app (`InferenceApp`) and the gRPC server only translate their wire
formats to it. During a rollout (`ServedRollouts`) the data plane routes a request for a
name's alias to an arm by its key, shadows it (`ShadowScorer`), and counts each arm's
evidence for the rollout's judge and ``/metrics``.
"""

from __future__ import annotations

from headrace.serving.app import (
    InferenceApp,
)
from headrace.serving.auth import (
    bearer_token,
    token_matches,
)
from headrace.serving.batching import (
    AdaptiveBatcher,
    BatchMode,
    BatchPart,
    BatchReport,
)
from headrace.serving.codec import (
    DATATYPES,
    DEFAULT_MAX_ELEMENTS,
    FIELD_DATATYPES,
    MAX_DIMS,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    InputTensor,
    OutputTensor,
    array_from_bytes,
    array_from_values,
    array_to_bytes,
    check_shape,
    columns_from_inputs,
    datatype_of,
    outputs_from_part,
    raise_for_rejections,
)
from headrace.serving.config import (
    AuthSpec,
    BatchingSpec,
    ConnectionsSpec,
    LimitsSpec,
    ServeSpec,
    TLSSpec,
    TracingSpec,
    load_serve_spec,
    serve_spec_from_dict,
)
from headrace.serving.dataplane import (
    DataPlane,
)
from headrace.serving.errors import (
    InferenceFailedError,
    InferenceTimeoutError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    ProtocolError,
    RequestTimeoutError,
    UnauthorizedError,
    status_of,
)
from headrace.serving.logfilter import (
    RateLimitFilter,
    rate_limit,
)
from headrace.serving.metrics import (
    ServerMetrics,
    new_registry,
)
from headrace.serving.openapi import (
    openapi_document,
)
from headrace.serving.protocol import (
    guarded_httptools_protocol,
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
from headrace.serving.rest import (
    InferRequest,
    encode_infer_response,
    parse_infer_request,
)
from headrace.serving.rollouts import (
    ArmObserver,
    EvidenceTally,
    ServedRollouts,
    assign_arm,
    model_ms,
    predicted_rows,
)
from headrace.serving.server import (
    StopSignals,
    bind,
    build_app,
    grpc_grace_s,
    uvicorn_server,
)
from headrace.serving.shadow import (
    ShadowJob,
    ShadowScorer,
)

__all__ = [
    "DATATYPES",
    "DEFAULT_MAX_ELEMENTS",
    "FIELD_DATATYPES",
    "MAX_DIMS",
    "OUTPUT_NAMES",
    "OUTPUT_PREDICTION",
    "OUTPUT_PROBABILITIES",
    "OUTPUT_SCORE",
    "AdaptiveBatcher",
    "ArmObserver",
    "AuthSpec",
    "BatchMode",
    "BatchPart",
    "BatchReport",
    "BatchingSpec",
    "ConnectionsSpec",
    "DataPlane",
    "EvidenceTally",
    "InferRequest",
    "InferenceApp",
    "InferenceFailedError",
    "InferenceTimeoutError",
    "InputTensor",
    "InvalidInputError",
    "LimitsSpec",
    "ModelMetadata",
    "ModelRepository",
    "ModelState",
    "ModelStatus",
    "NotFoundError",
    "OutputTensor",
    "OverloadedError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RateLimitFilter",
    "RequestTimeoutError",
    "ServeSpec",
    "ServedRollouts",
    "ServerMetrics",
    "ShadowJob",
    "ShadowScorer",
    "StopSignals",
    "TLSSpec",
    "TensorMetadata",
    "TracingSpec",
    "UnauthorizedError",
    "array_from_bytes",
    "array_from_values",
    "array_to_bytes",
    "assign_arm",
    "bearer_token",
    "bind",
    "build_app",
    "check_shape",
    "columns_from_inputs",
    "datatype_of",
    "encode_infer_response",
    "grpc_grace_s",
    "guarded_httptools_protocol",
    "load_serve_spec",
    "model_ms",
    "new_registry",
    "openapi_document",
    "outputs_from_part",
    "parse_infer_request",
    "predicted_rows",
    "raise_for_rejections",
    "rate_limit",
    "serve_spec_from_dict",
    "status_of",
    "token_matches",
    "uvicorn_server",
]
