"""Serving: the Open Inference Protocol v2 over HTTP and gRPC on the shared inference core.

Sits beside `headrace.pipeline` and never uses `headrace.streams`: a request goes through
the same validate -> predict -> postprocess path as a stream event. `ModelRepository`
turns model names into loaded, warmed-up inference services under a memory budget and
follows alias moves (promotions, rollbacks) with an atomic hot swap; the transports ask
it for a service per request.
"""

from __future__ import annotations

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
    "OUTPUT_PREDICTION",
    "OUTPUT_SCORE",
    "ModelMetadata",
    "ModelRepository",
    "ModelState",
    "ModelStatus",
    "TensorMetadata",
]
