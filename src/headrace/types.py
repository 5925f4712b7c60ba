"""The few shapes every part speaks.

A batch travels columnar: one numpy array per field, all of one length. Parts pass these
around instead of lists of dicts because Python pays per call, not per element.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["Array", "Columns", "JSONValue", "Matrix"]

Array: TypeAlias = npt.NDArray[Any]
"""One column of a batch (numeric dtype, or ``object`` for strings and raw values)."""

Columns: TypeAlias = Mapping[str, Array]
"""A columnar batch: field name -> column, all columns of one length."""

Matrix: TypeAlias = npt.NDArray[np.float64] | npt.NDArray[np.object_]
"""The 2-D model input, rows x model inputs in the release's input order."""

JSONValue: TypeAlias = Any
"""A value that survives a JSON round trip (kept loose: msgspec checks it at the edges)."""
