"""The model matrix: validated columns laid out as the 2-D input the model was trained on."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from headrace.errors import SchemaError
from headrace.release.schema import Field, Schema
from headrace.types import Array, Columns, Matrix

__all__ = ["model_frame", "model_matrix"]


def _numeric(field: Field, column: Array) -> npt.NDArray[np.float64]:
    """One validated column as float64: bool 0/1, category code, null NaN."""
    if field.type == "category":
        codes = {value: float(i) for i, value in enumerate(field.values or ())}
        nan = float("nan")
        return np.fromiter((codes.get(v, nan) for v in column), dtype=np.float64, count=len(column))
    if field.type == "string":  # only reached through _object_column
        raise SchemaError(f"string field '{field.name}' has no numeric form")
    return np.asarray(column, dtype=np.float64)


def _object_column(field: Field, column: Array) -> Array:
    if field.type == "string":
        return column
    return _numeric(field, column)


def model_matrix(schema: Schema, columns: Columns, *, inputs: Sequence[str]) -> Matrix:
    """Lay validated columns out as the model's 2-D input.

    Parameters
    ----------
    schema
        The release's input schema.
    columns
        Validated columns (`ValidatedBatch.columns`), all of one length.
    inputs
        The model's input fields, in the order it was trained on.

    Returns
    -------
    Matrix
        ``(rows, len(inputs))`` float64: numbers as they are, bool as 0/1, a category as
        its index in the field's `values`, a timestamp as epoch seconds, null as NaN.
        When an input is a ``string`` field the matrix is ``object`` instead, holding the
        strings (None for null) and the float encoding of every other input.

    Raises
    ------
    SchemaError
        When an input is not a schema field or has no column.
    """
    fields = [schema.field(name) for name in inputs]
    missing = [name for name in inputs if name not in columns]
    if missing:
        raise SchemaError(
            f"model inputs {missing!r} have no column in the batch: pass the columns "
            "returned by validate(), which hold every schema field"
        )
    n = len(columns[inputs[0]]) if inputs else 0
    if any(f.type == "string" for f in fields):
        out_obj: npt.NDArray[np.object_] = np.empty((n, len(fields)), dtype=object)
        for j, f in enumerate(fields):
            out_obj[:, j] = _object_column(f, columns[f.name])
        return out_obj
    out: npt.NDArray[np.float64] = np.empty((n, len(fields)), dtype=np.float64)
    for j, f in enumerate(fields):
        out[:, j] = _numeric(f, columns[f.name])
    return out


def model_frame(columns: Columns, *, inputs: Sequence[str]) -> Any:
    """Lay validated columns out as a pandas DataFrame, for a model fitted on one.

    The columns keep their validated dtypes (strings and categories as text, None for
    null; ints as int64; bools as bool), under the model's names in its order, so a
    ColumnTransformer selecting columns by name and a OneHotEncoder over strings see what
    they were fitted on.

    Raises
    ------
    SchemaError
        When an input has no column.
    """
    pd: Any = importlib.import_module("pandas")  # no type stubs: imported as Any

    missing = [name for name in inputs if name not in columns]
    if missing:
        raise SchemaError(
            f"model inputs {missing!r} have no column in the batch: pass the columns "
            "returned by validate(), which hold every schema field"
        )
    return pd.DataFrame({name: columns[name] for name in inputs}, copy=False)
