from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from headrace.errors import SchemaError
from headrace.inference.matrix import model_matrix
from headrace.inference.validate import records_to_columns, validate
from headrace.release.schema import Field, Schema

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float", nullable=True),
        Field(name="count", type="int"),
        Field(name="flag", type="bool", nullable=True),
        Field(name="merchant", type="category", values=["grocery", "travel"], nullable=True),
        Field(name="at", type="timestamp"),
        Field(name="name", type="string", nullable=True),
    ]
)
RECORDS: list[dict[str, Any]] = [
    {"amount": 1.5, "count": 2, "flag": True, "merchant": "travel", "at": 10, "name": "a"},
    {"amount": None, "count": 3, "flag": None, "merchant": None, "at": 20.5, "name": None},
]


def validated() -> dict[str, np.ndarray]:
    batch = validate(SCHEMA, records_to_columns(RECORDS, names=SCHEMA.names), n_rows=2)
    assert batch.rejections == []
    return batch.columns


def test_float_matrix_in_input_order() -> None:
    matrix = model_matrix(SCHEMA, validated(), inputs=["merchant", "amount", "count", "flag", "at"])
    assert matrix.dtype == np.float64 and matrix.shape == (2, 5)
    np.testing.assert_array_equal(matrix[0], [1.0, 1.5, 2.0, 1.0, 10.0])
    assert np.isnan(matrix[1, 0]) and np.isnan(matrix[1, 1]) and np.isnan(matrix[1, 3])
    np.testing.assert_array_equal(matrix[1, [2, 4]], [3.0, 20.5])


def test_string_input_makes_an_object_matrix() -> None:
    matrix = model_matrix(SCHEMA, validated(), inputs=["name", "amount", "merchant"])
    assert matrix.dtype == object
    assert matrix[0].tolist() == ["a", 1.5, 1.0]
    assert matrix[1, 0] is None and np.isnan(matrix[1, 1]) and np.isnan(matrix[1, 2])


def test_bool_column_without_nulls() -> None:
    schema = Schema(fields=[Field(name="flag", type="bool")])
    columns = validate(schema, {"flag": np.array([True, False])}, n_rows=2).columns
    np.testing.assert_array_equal(model_matrix(schema, columns, inputs=["flag"]), [[1.0], [0.0]])


def test_unknown_or_absent_inputs() -> None:
    with pytest.raises(SchemaError, match="no field 'nope'"):
        model_matrix(SCHEMA, validated(), inputs=["nope"])
    with pytest.raises(SchemaError, match=r"model inputs \['count'\] have no column"):
        model_matrix(SCHEMA, {"amount": np.zeros(2)}, inputs=["amount", "count"])
