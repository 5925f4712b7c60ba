"""A release as the model pool serves it: the shared loader, seen through the protocol.

Serving loads through `headrace.inference.loading` like the worker and ``headrace
predict`` do (prepare, load, check, warm up: one path, one set of checks); what is left
here is the one thing only a server needs, the Open Inference Protocol datatype of the
predictions the warm-up produced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from headrace.inference.loading import (
    WARMUP_ROWS,
    LoadedRelease,
    PreparedRelease,
    load_release,
    prepare_release,
)

__all__ = [
    "WARMUP_ROWS",
    "PreparedRelease",
    "ServedRelease",
    "load_release",
    "oip_datatype",
    "prepare_release",
]

ServedRelease = LoadedRelease
"""One release as the repository serves it (the shared loader's `LoadedRelease`)."""


def oip_datatype(dtype: np.dtype[Any] | None) -> str | None:
    """The Open Inference Protocol datatype of a numpy dtype (text and objects: BYTES;
    None for None, a release loaded without a warm-up)."""
    if dtype is None:
        return None
    kind = dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'INT' if kind == 'i' else 'UINT'}{dtype.itemsize * 8}"
    if kind == "f":
        return f"FP{dtype.itemsize * 8}"
    return "BYTES"
