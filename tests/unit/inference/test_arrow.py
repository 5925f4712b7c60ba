"""`columns_from_arrow` keeps Arrow types, and nulls apart from NaN."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from headrace.inference.arrow import columns_from_arrow


def test_columns_from_arrow_keeps_nulls_apart_from_nan() -> None:
    table = pa.table(
        {
            "f": pa.array([1.0, None, float("nan")]),
            "i": pa.array([1, None, 3]),
            "b": pa.array([True, None, False]),
            "s": pa.array(["a", None, "c"]),
            "d": pa.array(["x", "y", None]).dictionary_encode(),
        }
    )
    columns = columns_from_arrow(table)
    assert isinstance(columns["f"], np.ma.MaskedArray)
    assert np.ma.getmaskarray(columns["f"]).tolist() == [False, True, False]
    assert columns["i"].dtype == np.int64 and np.ma.getmaskarray(columns["i"])[1]
    assert columns["b"].dtype == np.bool_
    assert columns["s"].tolist() == ["a", None, "c"]
    assert columns["d"].tolist() == ["x", "y", None]
    assert list(columns_from_arrow(table, names=["s", "zzz"])) == ["s"]
