"""The one-pass check of plain float64 columns gives exactly what the field-by-field check
gives, on any batch: the same valid rows, typed columns and rejections (with reasons)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.inference.validate import validate
from headrace.release.schema import Field, Schema

VALUES = st.one_of(
    st.floats(min_value=-50, max_value=50),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]),
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[Schema, dict[str, np.ndarray], int]:
    n_fields = draw(st.integers(1, 5))
    fields = []
    for i in range(n_fields):
        low = draw(st.one_of(st.none(), st.floats(-40, 0)))
        high = draw(st.one_of(st.none(), st.floats(0, 40)))
        fields.append(
            Field(name=f"f{i}", type="float", min=low, max=high, allow_nan=draw(st.booleans()))
        )
    if draw(st.booleans()):  # a field of another type beside them takes the slow path
        fields.append(Field(name="kind", type="category", values=["a", "b"]))
    n = draw(st.integers(0, 12))
    columns: dict[str, np.ndarray] = {
        f.name: np.array(draw(st.lists(VALUES, min_size=n, max_size=n)), dtype=np.float64)
        for f in fields
        if f.type == "float"
    }
    if "kind" in {f.name for f in fields}:
        columns["kind"] = np.array(
            draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n)), dtype=object
        )
    return Schema(fields=fields), columns, n


@settings(max_examples=300, deadline=None)
@given(batches())
def test_the_fast_path_agrees_with_the_field_by_field_check(
    batch: tuple[Schema, dict[str, np.ndarray], int],
) -> None:
    schema, columns, n = batch
    fast = validate(schema, columns, n_rows=n)
    # A masked array without a mask goes field by field, meaning the same values.
    slow_columns = {
        name: np.ma.masked_array(c, mask=False) if c.dtype == np.float64 else c
        for name, c in columns.items()
    }
    slow = validate(schema, slow_columns, n_rows=n)
    assert fast.rows.tolist() == slow.rows.tolist()
    assert [(r.row, r.field, r.reason) for r in fast.rejections] == [
        (r.row, r.field, r.reason) for r in slow.rejections
    ]
    assert list(fast.columns) == list(slow.columns) == [f.name for f in schema.fields]
    for name in fast.columns:
        a, b = fast.columns[name], slow.columns[name]
        assert a.dtype == b.dtype
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)  # NaN where NaN
        else:
            assert a.tolist() == b.tolist()


def test_clean_float_columns_are_passed_through_uncopied() -> None:
    schema = Schema(fields=[Field(name="x", type="float", min=0, max=10)])
    column = np.array([1.0, 2.5, 9.0])
    checked = validate(schema, {"x": column}, n_rows=3)
    assert checked.columns["x"] is column and not checked.rejections
    bad = validate(schema, {"x": np.array([1.0, 11.0, np.nan])}, n_rows=3)
    assert [r.reason for r in bad.rejections] == [
        "Value 11.0 above maximum 10.0 - at `$.x`",
        "NaN not allowed - at `$.x`",
    ]
