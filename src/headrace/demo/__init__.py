"""The demo: the whole headrace story on embedded defaults (``headrace demo``).

It also provides the transaction generator the examples and benchmarks use.
"""

from __future__ import annotations

from headrace.demo.data import (
    FEATURES,
    MALFORMED_KINDS,
    MERCHANTS,
    SCHEMA_YAML,
    Transactions,
    event_stream,
    generate,
    training_matrix,
)
from headrace.demo.story import DemoResult, run_demo

__all__ = [
    "FEATURES",
    "MALFORMED_KINDS",
    "MERCHANTS",
    "SCHEMA_YAML",
    "DemoResult",
    "Transactions",
    "event_stream",
    "generate",
    "run_demo",
    "training_matrix",
]
