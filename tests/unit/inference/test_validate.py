from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from headrace.errors import ValidationError
from headrace.inference.validate import (
    MISSING,
    Rejection,
    ValidatedBatch,
    records_to_columns,
    validate,
)
from headrace.release.schema import Field, Schema


def one(field: Field, values: list[Any] | np.ndarray, *, coerce: bool = False) -> ValidatedBatch:
    """Validate a single-field batch given as an object column (or any array)."""
    column = values if isinstance(values, np.ndarray) else _objects(values)
    return validate(
        Schema(fields=[field]), {field.name: column}, n_rows=len(column), coerce_strings=coerce
    )


def _objects(values: list[Any]) -> np.ndarray:
    return np.fromiter(values, dtype=object, count=len(values))


def reasons(batch: ValidatedBatch) -> dict[int, str]:
    return {r.row: r.reason for r in batch.rejections}


AMOUNT = Field(name="amount", type="float", min=0, max=1000)


# -- JSON (object columns): strict types -----------------------------------------------


def test_float_accepts_ints_and_floats_fast_path() -> None:
    batch = one(AMOUNT, [1, 2.5, 0, 1000])
    assert batch.rejections == []
    assert batch.columns["amount"].dtype == np.float64
    assert batch.columns["amount"].tolist() == [1.0, 2.5, 0.0, 1000.0]
    assert batch.rows.tolist() == [0, 1, 2, 3] and batch.rows.dtype == np.int64


def test_float_rejections_read_like_msgspec() -> None:
    batch = one(AMOUNT, [1.0, "1.5", True, None, 1500.0, -1, float("nan"), float("inf"), [1]])
    assert batch.rows.tolist() == [0]
    assert reasons(batch) == {
        1: "Expected `float`, got `str` - at `$.amount`",
        2: "Expected `float`, got `bool` - at `$.amount`",
        3: "Expected `float`, got `null` - at `$.amount`",
        4: "Value 1500.0 above maximum 1000.0 - at `$.amount`",
        5: "Value -1.0 below minimum 0.0 - at `$.amount`",
        6: "NaN not allowed - at `$.amount`",
        7: "Infinity not allowed - at `$.amount`",
        8: "Expected `float`, got `array` - at `$.amount`",
    }
    assert all(r.field == "amount" and r.stage == "validate" for r in batch.rejections)


def test_allow_nan_and_nullable() -> None:
    field = Field(name="x", type="float", allow_nan=True, nullable=True)
    batch = one(field, [float("nan"), float("-inf"), None, 1])
    assert batch.rejections == []
    values = batch.columns["x"]
    assert np.isnan(values[0]) and values[1] == -np.inf and np.isnan(values[2])
    assert "-Infinity not allowed" in reasons(one(Field(name="x", type="float"), [-np.inf]))[0]


def test_int_field() -> None:
    field = Field(name="n", type="int", min=0)
    batch = one(field, [1, 2.0, 1.5, True, "3", 2**70, -4, float("nan")])
    assert batch.rows.tolist() == [0, 1]
    assert batch.columns["n"].dtype == np.int64 and batch.columns["n"].tolist() == [1, 2]
    assert reasons(batch) == {
        2: "Expected `int`, got `float` - at `$.n`",
        3: "Expected `int`, got `bool` - at `$.n`",
        4: "Expected `int`, got `str` - at `$.n`",
        5: f"Integer {2**70} out of range for int64 - at `$.n`",
        6: "Value -4 below minimum 0.0 - at `$.n`",
        7: "NaN not allowed - at `$.n`",
    }


def test_int_with_nulls_becomes_float() -> None:
    batch = one(Field(name="n", type="int", nullable=True), [1, None, 3])
    assert batch.columns["n"].dtype == np.float64
    assert np.isnan(batch.columns["n"][1])
    only_ints = one(Field(name="n", type="int", nullable=True), [1, None, "x"])
    assert only_ints.rows.tolist() == [0, 1]


def test_bool_field() -> None:
    batch = one(Field(name="b", type="bool"), [True, False, 1, "true", None])
    assert batch.columns["b"].dtype == np.bool_ and batch.columns["b"].tolist() == [True, False]
    assert reasons(batch) == {
        2: "Expected `bool`, got `int` - at `$.b`",
        3: "Expected `bool`, got `str` - at `$.b`",
        4: "Expected `bool`, got `null` - at `$.b`",
    }
    nullable = one(Field(name="b", type="bool", nullable=True), [True, None])
    assert nullable.columns["b"].dtype == np.float64
    assert nullable.columns["b"][0] == 1.0 and np.isnan(nullable.columns["b"][1])


def test_string_field() -> None:
    batch = one(Field(name="s", type="string", max_length=3), ["ab", "", "abcd", 1, {"a": 1}])
    assert batch.columns["s"].tolist() == ["ab", ""]
    assert batch.columns["s"].dtype == object
    assert reasons(batch) == {
        2: "Expected `str` of length <= 3, got length 4 - at `$.s`",
        3: "Expected `str`, got `int` - at `$.s`",
        4: "Expected `str`, got `object` - at `$.s`",
    }


def test_category_field() -> None:
    field = Field(name="merchant", type="category", values=["a", "b"])
    batch = one(field, ["a", "b", "xx", 3])
    assert batch.columns["merchant"].tolist() == ["a", "b"]
    assert reasons(batch) == {
        2: "Value 'xx' not one of ['a', 'b'] - at `$.merchant`",
        3: "Expected `str`, got `int` - at `$.merchant`",
    }
    many = Field(name="m", type="category", values=[f"v{i}" for i in range(15)])
    assert "(and 5 more)" in reasons(one(many, ["zz"]))[0]


def test_timestamp_field() -> None:
    field = Field(name="at", type="timestamp", min=0, nullable=True)
    values = [
        "2024-01-01T00:00:00Z",
        "2024-01-01T01:00:00+01:00",
        "2024-01-01",
        1_704_067_200,
        1_704_067_200.5,
        dt.datetime(2024, 1, 1),
        dt.date(2024, 1, 1),
        np.datetime64("2024-01-01T00:00:00"),
        None,
        "soon",
        "1704067200",
        True,
        -5,
    ]
    batch = one(field, values)
    expected = 1_704_067_200.0
    assert batch.rows.tolist() == list(range(9))
    got = batch.columns["at"]
    assert got.dtype == np.float64
    assert got[:4].tolist() == [expected] * 4
    assert got[4] == expected + 0.5
    assert got[5:8].tolist() == [expected] * 3
    assert np.isnan(got[8])
    assert reasons(batch) == {
        9: "Cannot parse 'soon' as `timestamp` (ISO 8601 `str` or epoch seconds) - at `$.at`",
        10: "Cannot parse '1704067200' as `timestamp` (ISO 8601 `str` or epoch seconds)"
        " - at `$.at`",
        11: "Expected `timestamp` (ISO 8601 `str` or epoch seconds), got `bool` - at `$.at`",
        12: "Value -5 below minimum 0.0 - at `$.at`",
    }


def test_missing_and_defaults() -> None:
    schema = Schema(
        fields=[
            Field(name="amount", type="float"),
            Field(
                name="country", type="category", values=["FR", "DE"], required=False, default="FR"
            ),
            Field(name="note", type="string", required=False, nullable=True),
        ]
    )
    records: list[Mapping[str, Any]] = [
        {"amount": 1.0},
        {"country": "DE"},
        {"amount": 2, "country": None, "note": "x", "extra": [1, 2]},
    ]
    batch = validate(schema, records_to_columns(records, names=schema.names), n_rows=3)
    assert batch.rows.tolist() == [0]
    assert batch.columns["country"].tolist() == ["FR"]
    assert batch.columns["note"].tolist() == [None]
    assert reasons(batch) == {
        1: "Missing required field `amount`",
        2: "Expected `str`, got `null` - at `$.country`",
    }


def test_absent_columns() -> None:
    schema = Schema(
        fields=[
            Field(name="a", type="int", required=False, default=7),
            Field(name="b", type="float", required=False, nullable=True),
        ]
    )
    batch = validate(schema, {}, n_rows=2)
    assert batch.columns["a"].tolist() == [7, 7]
    assert np.isnan(batch.columns["b"]).all()
    required = validate(Schema(fields=[AMOUNT]), {"other": np.zeros(2)}, n_rows=2)
    assert reasons(required) == {
        0: "Missing required field `amount`",
        1: "Missing required field `amount`",
    }
    assert required.columns["amount"].shape == (0,)


def test_first_field_in_schema_order_wins_and_rows_are_sorted() -> None:
    schema = Schema(
        fields=[
            Field(name="a", type="float"),
            Field(name="b", type="int"),
        ]
    )
    columns = {"a": _objects([1.0, "x", 2.0, "y"]), "b": _objects(["bad", "bad", 3, 4])}
    batch = validate(schema, columns, n_rows=4)
    assert [(r.row, r.field) for r in batch.rejections] == [(0, "b"), (1, "a"), (3, "a")]
    assert batch.rows.tolist() == [2]
    assert batch.columns["a"].tolist() == [2.0] and batch.columns["b"].tolist() == [3]


def test_pii_values_never_appear() -> None:
    private = "jane@example.com"
    fields = [
        Field(name="email", type="category", values=["a"], pii=True),
        Field(name="salary", type="float", max=10, pii=True),
        Field(name="born", type="timestamp", pii=True),
        Field(name="card", type="string", max_length=3, pii=True),
        Field(name="age", type="int", pii=True),
    ]
    cases: list[tuple[Field, Any, bool]] = [
        (fields[0], private, False),
        (fields[1], 123456.0, False),
        (fields[1], private, True),
        (fields[2], private, False),
        (fields[3], private, False),
        (fields[4], "99999999999999999999", True),
        (fields[4], 2**80, False),
    ]
    for field, value, coerce in cases:
        [rejection] = one(field, [value], coerce=coerce).rejections
        assert str(value) not in rejection.reason, rejection.reason
        assert "123456" not in rejection.reason
    [r] = one(fields[1], [123456.0]).rejections
    assert r.reason == "Value <redacted> above maximum 10.0 - at `$.salary`"
    [r] = one(fields[0], [private]).rejections
    assert r.reason == "Value <redacted> not one of ['a'] - at `$.email`"


def test_lists_and_numpy_strings() -> None:
    batch = validate(Schema(fields=[AMOUNT]), {"amount": [1, "2"]}, n_rows=2)  # type: ignore[dict-item]
    assert reasons(batch) == {1: "Expected `float`, got `str` - at `$.amount`"}
    names = one(Field(name="s", type="string"), np.array(["a", "b"]))
    assert names.columns["s"].dtype == object and names.columns["s"].tolist() == ["a", "b"]


def test_column_length_mismatch_raises() -> None:
    with pytest.raises(
        ValidationError, match=r"Column has 2 values but the batch has n_rows=3.* - at `\$\.amount`"
    ):
        validate(Schema(fields=[AMOUNT]), {"amount": np.zeros(2)}, n_rows=3)


def test_empty_batch() -> None:
    batch = validate(Schema(fields=[AMOUNT]), {"amount": np.zeros(0)}, n_rows=0)
    assert batch.rows.shape == (0,) and batch.rejections == [] and batch.n_rows == 0


# -- Parquet (typed columns) -----------------------------------------------------------


def test_typed_float_column() -> None:
    values = np.array([1.0, np.nan, np.inf, 2000.0, 5.0])
    batch = one(AMOUNT, values)
    assert batch.rows.tolist() == [0, 4]
    assert reasons(batch) == {
        1: "NaN not allowed - at `$.amount`",
        2: "Infinity not allowed - at `$.amount`",
        3: "Value 2000.0 above maximum 1000.0 - at `$.amount`",
    }
    ints = one(AMOUNT, np.array([1, 2], dtype=np.int32))
    assert ints.columns["amount"].dtype == np.float64 and ints.rejections == []


def test_typed_nulls_come_as_masks() -> None:
    column = np.ma.MaskedArray(np.array([1.0, 0.0, 3.0]), mask=[False, True, False])
    batch = one(AMOUNT, column)
    assert reasons(batch) == {1: "Expected `float`, got `null` - at `$.amount`"}
    nullable = one(Field(name="amount", type="float", nullable=True), column)
    assert np.isnan(nullable.columns["amount"][1]) and nullable.rejections == []
    ints = np.ma.MaskedArray(np.array([1, 0, 3]), mask=[False, True, False])
    nullable_int = one(Field(name="n", type="int", nullable=True), ints)
    assert nullable_int.columns["n"].dtype == np.float64
    assert np.isnan(nullable_int.columns["n"][1])
    strings = np.ma.MaskedArray(np.array(["a", "", "c"], dtype=object), mask=[False, True, False])
    s = one(Field(name="s", type="string"), strings)
    assert reasons(s) == {1: "Expected `str`, got `null` - at `$.s`"}


def test_typed_int_column() -> None:
    field = Field(name="n", type="int", max=10)
    batch = one(field, np.array([1, 20, 3], dtype=np.int64))
    assert reasons(batch) == {1: "Value 20 above maximum 10.0 - at `$.n`"}
    assert batch.columns["n"].dtype == np.int64
    from_floats = one(field, np.array([1.0, 2.5, np.nan, 1e30]))
    assert from_floats.columns["n"].tolist() == [1]
    assert reasons(from_floats) == {
        1: "Expected `int`, got `float` - at `$.n`",
        2: "NaN not allowed - at `$.n`",
        3: "Integer 1e+30 out of range for int64 - at `$.n`",
    }
    huge = one(field, np.array([2**64 - 1], dtype=np.uint64))
    assert "out of range for int64" in reasons(huge)[0]


def test_typed_wrong_types() -> None:
    assert reasons(one(AMOUNT, np.array([True]))) == {
        0: "Expected `float`, got `bool` - at `$.amount`"
    }
    b = Field(name="b", type="bool")
    assert reasons(one(b, np.array([1, 0]))) == {
        0: "Expected `bool`, got `int` - at `$.b`",
        1: "Expected `bool`, got `int` - at `$.b`",
    }
    assert one(b, np.array([True, False])).columns["b"].tolist() == [True, False]
    s = Field(name="s", type="category", values=["a"])
    assert reasons(one(s, np.array([1.5]))) == {0: "Expected `str`, got `float` - at `$.s`"}
    masked = np.ma.MaskedArray(np.array([1.5, 0.0]), mask=[False, True])
    nullable = Field(name="s", type="string", nullable=True)
    assert [r.row for r in one(nullable, masked).rejections] == [0]


def test_typed_timestamps() -> None:
    field = Field(name="at", type="timestamp", nullable=True)
    stamps = np.array(["2024-01-01T00:00:00", "NaT"], dtype="datetime64[ns]")
    batch = one(field, stamps)
    assert batch.columns["at"][0] == 1_704_067_200.0 and np.isnan(batch.columns["at"][1])
    strict = one(Field(name="at", type="timestamp"), stamps)
    assert reasons(strict) == {
        1: "Expected `timestamp` (ISO 8601 `str` or epoch seconds), got `null` - at `$.at`"
    }
    epoch = one(field, np.array([1_704_067_200], dtype=np.int64))
    assert epoch.columns["at"].tolist() == [1_704_067_200.0]
    days = one(field, np.array(["2024-01-01"], dtype="datetime64[D]"))
    assert days.columns["at"].tolist() == [1_704_067_200.0]


# -- CSV (text, coerce_strings) --------------------------------------------------------


def test_csv_float() -> None:
    batch = one(AMOUNT, ["1.5", "7", "", "abc", "1e9", "nan", "-inf"], coerce=True)
    assert batch.rows.tolist() == [0, 1]
    assert batch.columns["amount"].tolist() == [1.5, 7.0]
    assert reasons(batch) == {
        2: "Expected `float`, got `null` - at `$.amount`",
        3: "Cannot parse 'abc' as `float` - at `$.amount`",
        4: "Value 1000000000.0 above maximum 1000.0 - at `$.amount`",
        5: "NaN not allowed - at `$.amount`",
        6: "-Infinity not allowed - at `$.amount`",
    }


def test_csv_int_bool_string_category_timestamp() -> None:
    schema = Schema(
        fields=[
            Field(name="n", type="int", nullable=True),
            Field(name="b", type="bool"),
            Field(name="s", type="string", nullable=True),
            Field(name="c", type="category", values=["x", "y"]),
            Field(name="t", type="timestamp"),
        ]
    )
    columns = {
        "n": _objects(["1", "2.0", "", "2.5", "99999999999999999999", "1"]),
        "b": _objects(["true", "False", "1", "0", "1", "maybe"]),
        "s": _objects(["a", "", "c", "d", "e", "f"]),
        "c": _objects(["x", "y", "x", "x", "x", "x"]),
        "t": _objects(["2024-01-01", "1704067200", "2024-01-01T00:00:00Z"] + ["0"] * 3),
    }
    batch = validate(schema, columns, n_rows=6, coerce_strings=True)
    assert batch.rows.tolist() == [0, 1, 2]
    assert batch.columns["n"].tolist()[:2] == [1.0, 2.0] and np.isnan(batch.columns["n"][2])
    assert batch.columns["b"].tolist() == [True, False, True]
    assert batch.columns["s"].tolist() == ["a", None, "c"]
    assert batch.columns["t"].tolist() == [1_704_067_200.0] * 3
    assert reasons(batch) == {
        3: "Cannot parse '2.5' as `int` - at `$.n`",
        4: "Integer '99999999999999999999' out of range for int64 - at `$.n`",
        5: "Cannot parse 'maybe' as `bool` - at `$.b`",
    }


def test_csv_category_empty_is_null() -> None:
    field = Field(name="c", type="category", values=["x"])
    assert reasons(one(field, ["x", "", "z"], coerce=True)) == {
        1: "Expected `str`, got `null` - at `$.c`",
        2: "Value 'z' not one of ['x'] - at `$.c`",
    }
    # without coercion an empty string is just a value not in the list
    assert "not one of" in reasons(one(field, [""]))[0]


# -- records_to_columns and MISSING ----------------------------------------------------


def test_records_to_columns() -> None:
    columns = records_to_columns([{"a": 1, "b": [1, 2]}, {"a": None}], names=["a", "b"])
    assert columns["a"].dtype == object and columns["a"].tolist() == [1, None]
    assert columns["b"][0] == [1, 2] and columns["b"][1] is MISSING


def test_missing_sentinel() -> None:
    assert repr(MISSING) == "MISSING" and not MISSING
    assert type(MISSING)() is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


def test_rejection_is_a_record() -> None:
    r = Rejection(row=3, field=None, reason="x")
    assert r.stage == "validate"
    with pytest.raises(AttributeError):
        r.row = 4  # type: ignore[misc]


def test_large_batch_fast_paths_are_fast_enough() -> None:
    n = 200_000
    schema = Schema(
        fields=[
            Field(name="a", type="float"),
            Field(name="c", type="category", values=["x", "y"]),
        ]
    )
    columns = {
        "a": np.fromiter((float(i) for i in range(n)), dtype=object, count=n),
        "c": np.fromiter(("x" if i % 2 else "y" for i in range(n)), dtype=object, count=n),
    }
    batch = validate(schema, columns, n_rows=n)
    assert batch.rows.size == n and batch.columns["a"][-1] == n - 1
