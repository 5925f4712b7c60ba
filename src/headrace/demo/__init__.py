"""The demo: the whole headrace story on embedded defaults (``headrace demo``).

It also provides the transaction generator the examples and benchmarks use, and the
demo's serving part: the HTTP server beside the stream (`DemoServer`) and the client that
asks it a few Open Inference Protocol questions (`ask_server`).
"""

from __future__ import annotations

from headrace.demo.data import (
    DRIFTED_MIX,
    FEATURES,
    MALFORMED_KINDS,
    MERCHANTS,
    SCHEMA_YAML,
    Transactions,
    event_stream,
    generate,
    generate_drifting,
    training_matrix,
)
from headrace.demo.serving import (
    DemoServer,
    ServedAnswer,
    ServingBeside,
    ServingReport,
    ask_server,
    serve_beside_stream,
)
from headrace.demo.story import DemoResult, run_demo

__all__ = [
    "DRIFTED_MIX",
    "FEATURES",
    "MALFORMED_KINDS",
    "MERCHANTS",
    "SCHEMA_YAML",
    "DemoResult",
    "DemoServer",
    "ServedAnswer",
    "ServingBeside",
    "ServingReport",
    "Transactions",
    "ask_server",
    "event_stream",
    "generate",
    "generate_drifting",
    "run_demo",
    "serve_beside_stream",
    "training_matrix",
]
