"""Arrow data as numpy columns for the inference core.

The Parquet reader and the draft check (`headrace.inference.contract.check_draft`) both
hand Arrow tables to `InferenceService.infer`; `columns_from_arrow` is the one place that
decides how Arrow types and nulls become numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from headrace.inference.chunk import _select_names
from headrace.types import Array

__all__ = ["columns_from_arrow"]


def _arrow_to_numpy(array: Any) -> Array:
    """One Arrow column as numpy: typed where possible, nulls as a mask (NaT for times)."""
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if types.is_decimal(array.type):
        array = array.cast(pa.float64())
    kind = array.type
    if types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind):
        if array.null_count == 0:
            values: Array = array.to_numpy(zero_copy_only=False)
            return values
        mask = array.is_null().to_numpy(zero_copy_only=False)
        filled = array.fill_null(False if types.is_boolean(kind) else 0)
        return np.ma.MaskedArray(filled.to_numpy(zero_copy_only=False), mask=mask)
    if (
        types.is_timestamp(kind)
        or types.is_date(kind)
        or types.is_string(kind)
        or types.is_large_string(kind)
    ):
        converted: Array = array.to_numpy(zero_copy_only=False)
        return converted
    values_list = array.to_pylist()
    return np.fromiter(values_list, dtype=object, count=len(values_list))


def columns_from_arrow(data: Any, *, names: Sequence[str] | None = None) -> dict[str, Array]:
    """Columns for `InferenceService.infer` from a pyarrow Table or RecordBatch.

    Numbers and booleans stay typed (nulls as a `numpy.ma.MaskedArray` mask, so a null
    int is not mistaken for a NaN float), timestamps become datetime64 (NaT for null),
    strings and dictionary values become object arrays (None for null).

    Parameters
    ----------
    data
        A `pyarrow.Table` or `pyarrow.RecordBatch`.
    names
        Only these columns (those present); None converts every column.
    """
    out: dict[str, Array] = {}
    for name in _select_names(data.schema.names, names):
        column = data.column(name)
        if hasattr(column, "combine_chunks"):
            column = column.combine_chunks()
        out[name] = _arrow_to_numpy(column)
    return out
