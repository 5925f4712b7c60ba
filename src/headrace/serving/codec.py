"""Open Inference Protocol v2 tensors <-> the inference core's columns and results.

Transport-neutral: the HTTP (JSON and binary extension) and gRPC servers parse their wire
format into `InputTensor` values, call `columns_from_inputs`, hand the columns to the
batcher, and turn the answer back into `OutputTensor` values with `outputs_from_part`.

A request carries either

- one 2-D tensor ``[rows, fields]`` whose columns are the schema's fields in schema order
  (any name; one datatype for all, so a schema with text fields needs the next form), or
- one 1-D tensor ``[rows]`` (or ``[rows, 1]``) per schema field, named after the field;
  an optional field may be left out.

The answer holds ``prediction`` (one value per row) and, when the model gives class
probabilities, ``score`` (the positive class's probability for a binary classifier, the
predicted class's otherwise). A classifier also has the opt-in ``probabilities`` output,
FP64 ``[rows, classes]`` with the class names as its ``classes`` parameter, sent only when
the request names it in ``outputs`` (default answers stay two small 1-D tensors, which is
what most clients read and what the latency benchmarks measure). Every problem is a
`ProtocolError` naming the input and what to send instead; a row that fails the schema
fails the whole request with 400.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np

from headrace.inference.validate import Rejection
from headrace.release.schema import Schema
from headrace.serving.errors import InferenceFailedError, InvalidInputError
from headrace.types import Array

__all__ = [
    "DATATYPES",
    "DEFAULT_MAX_ELEMENTS",
    "FIELD_DATATYPES",
    "MAX_DIMS",
    "OUTPUT_NAMES",
    "OUTPUT_PROBABILITIES",
    "InputTensor",
    "OutputTensor",
    "array_from_bytes",
    "array_from_values",
    "array_to_bytes",
    "check_shape",
    "columns_from_inputs",
    "datatype_of",
    "outputs_from_part",
    "raise_for_rejections",
]

DATATYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""Every tensor datatype of the protocol and the numpy dtype of its binary form
(little-endian; ``BYTES`` elements are Python ``str``)."""

FIELD_DATATYPES: Final[dict[str, str]] = {
    "float": "FP64",
    "int": "INT64",
    "bool": "BOOL",
    "string": "BYTES",
    "category": "BYTES",
    "timestamp": "BYTES",
}
"""The datatype a client sends for each schema field type (a ``timestamp`` may also be
sent as FP64 epoch seconds, a ``float`` as any INT or FP datatype)."""

OUTPUT_NAMES: Final = ("prediction", "score")
"""The outputs a model answers with by default (as `ModelRepository.metadata` lists them);
``score`` only when the model has class probabilities."""

OUTPUT_PROBABILITIES: Final = "probabilities"
"""The opt-in output of a classifier with probabilities: FP64 ``[rows, classes]``, every
class's probability, the class names in its ``classes`` parameter. Sent only when a
request asks for it by name."""

DEFAULT_MAX_ELEMENTS: Final = 1 << 24
"""The most values one tensor may declare (``limits.max_elements`` overrides it): a
declared shape is checked against it, and against the data present, before anything is
allocated, so a few bytes declaring ``[500000000]`` cost nothing."""

MAX_DIMS: Final = 32
"""The most dimensions a tensor may declare (numpy's own ceiling is 64)."""

_SHOWN_REJECTIONS: Final = 3
_LENGTH: Final = struct.Struct("<I")

# JSON values -> the Python type msgspec checks them against, strictly (a bool is not a
# number, "1.5" is not a float); numbers of every width are checked in range by numpy.
_PY_TYPES: Final[dict[str, type]] = {
    "BOOL": bool,
    **{f"INT{bits}": int for bits in (8, 16, 32, 64)},
    **{f"UINT{bits}": int for bits in (8, 16, 32, 64)},
    **{f"FP{bits}": float for bits in (16, 32, 64)},
}
# JSON numbers are decimal text: FP16/FP32 values are kept as float64 so that the value a
# client wrote is the value the model sees (no rounding through a narrower float).
_VALUE_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    **DATATYPES,
    "FP16": np.dtype(np.float64),
    "FP32": np.dtype(np.float64),
}


@dataclass(frozen=True, slots=True)
class InputTensor:
    """One input of a request, decoded from the wire.

    Attributes
    ----------
    name
        The tensor's name: a schema field, or any name for the 2-D form.
    datatype
        One of `DATATYPES`.
    shape
        The declared shape; `data` has been checked to hold ``prod(shape)`` values.
    data
        The values, already shaped as `shape`.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Array


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One output of a response: one value (or one row of values) per request row.

    Attributes
    ----------
    name
        ``prediction``, ``score`` or ``probabilities``.
    datatype
        One of `DATATYPES` (see `datatype_of`).
    shape
        ``(rows,)``, or ``(rows, classes)`` for ``probabilities``.
    data
        The values as a numpy array of `shape` (``object`` of ``str`` for BYTES).
    parameters
        The tensor's parameters for the response (``probabilities``: ``{"classes":
        [...]}``, the class name of each column); None for none.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Array
    parameters: Mapping[str, Any] | None = None


def _check_datatype(datatype: str, *, name: str) -> None:
    if datatype not in DATATYPES:
        raise InvalidInputError(
            f"Input '{name}' has datatype {datatype!r}, which is not a datatype of the "
            f"protocol: use one of {', '.join(DATATYPES)}"
        )


def check_shape(
    shape: Sequence[int], *, name: str, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[int, ...]:
    """A declared shape, checked before any of its values is looked at or allocated.

    Raises
    ------
    InvalidInputError
        When it has more than `MAX_DIMS` dimensions, a dimension that is not a
        non-negative integer, or declares more than `max_elements` values.
    """
    dims = tuple(shape)
    if len(dims) > MAX_DIMS:
        raise InvalidInputError(
            f"Input '{name}' declares {len(dims)} dimensions: a tensor has at most "
            f"{MAX_DIMS}, like [rows, fields] or [rows]"
        )
    if not dims or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in dims):
        raise InvalidInputError(
            f"Input '{name}' has shape {_show_shape(dims)}: a shape is a non-empty list of "
            "non-negative integers, like [rows, fields] or [rows]"
        )
    count = math.prod(dims)
    if count > max_elements:
        raise InvalidInputError(
            f"Input '{name}' declares shape {_show_shape(dims)} ({count} values), more than "
            f"the server's limit of {max_elements} values per tensor (limits.max_elements): "
            "send fewer rows per request"
        )
    return dims


def _show_shape(dims: tuple[object, ...]) -> str:
    """A declared shape for a message, cut short (a client chose its length)."""
    shown = ", ".join(str(d)[:24] for d in dims[:6])
    return f"[{shown}{', ...' if len(dims) > 6 else ''}]"


def _shaped(values: Array, shape: tuple[int, ...], *, name: str) -> Array:
    count = math.prod(shape)
    if values.size != count:
        raise InvalidInputError(
            f"Input '{name}' has shape {list(shape)} ({count} values) but its data holds "
            f"{values.size} values: send exactly prod(shape) values, row-major"
        )
    return values.reshape(shape)


def array_from_values(
    values: Sequence[Any] | Array,
    *,
    datatype: str,
    shape: Sequence[int],
    name: str,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Array:
    """Check a tensor's values (flat or nested row-major, as JSON or gRPC carry them).

    Parameters
    ----------
    values
        Python values (a list, possibly nested) or a numpy array.
    datatype
        The declared datatype; values of another type fail (a bool is not a number, the
        text ``"1.5"`` is not a float), and integers must fit the declared width.
    shape
        The declared shape.
    name
        The input's name, for messages.
    max_elements
        The most values the shape may declare.

    Returns
    -------
    Array
        The values shaped as `shape`: float64 for every FP datatype (a decimal value is
        not rounded through a narrower float), the declared dtype for BOOL and INT,
        ``object`` of ``str`` for BYTES.

    Raises
    ------
    InvalidInputError
        On an unknown datatype, a value of the wrong type or range, ragged nesting, or a
        value count that does not match the shape.
    """
    _check_datatype(datatype, name=name)
    dims = check_shape(shape, name=name, max_elements=max_elements)
    if isinstance(values, np.ndarray):
        return _shaped(_typed_array(values, datatype, name=name), dims, name=name)
    flat = list(_flatten(values, name=name))
    if datatype == "BYTES":
        out = np.empty(len(flat), dtype=object)
        out[:] = [_text(v, name=name, index=i) for i, v in enumerate(flat)]
        return _shaped(out, dims, name=name)
    try:
        checked = msgspec.convert(flat, list[_PY_TYPES[datatype]])  # type: ignore[valid-type]
    except msgspec.ValidationError as exc:
        raise InvalidInputError(
            f"Input '{name}' declares datatype {datatype} but {_at(str(exc), name)}: "
            f"send {datatype} values or declare the datatype of the data"
        ) from None
    return _shaped(_to_dtype(checked, datatype, name=name), dims, name=name)


def _at(message: str, name: str) -> str:
    """Turn msgspec's ``... - at `$[3]``` into ``... at `name[3]```."""
    return message.replace("- at `$", f"at `{name}").replace("Expected", "expected", 1)


def _flatten(values: Iterable[Any], *, name: str, depth: int = 1) -> Iterable[Any]:
    if depth > MAX_DIMS:  # deeper than any tensor: refuse before Python's recursion limit
        raise InvalidInputError(
            f"Input '{name}' nests its data more than {MAX_DIMS} lists deep: send the values "
            "flat (row-major) or nested as the shape"
        )
    for value in values:
        if isinstance(value, list | tuple):
            yield from _flatten(value, name=name, depth=depth + 1)
        else:
            yield value


def _text(value: Any, *, name: str, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return _utf8(bytes(value), name=name, index=index)
    got = "null" if value is None else type(value).__name__
    raise InvalidInputError(
        f"Input '{name}' declares datatype BYTES but value {index} is `{got}`: BYTES "
        "values are strings"
    )


def _utf8(raw: bytes, *, name: str, index: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"Input '{name}' BYTES element {index} is not UTF-8 text: the model's fields "
            "take text, encode it as UTF-8"
        ) from None


def _to_dtype(values: list[Any], datatype: str, *, name: str) -> Array:
    try:
        return np.array(values, dtype=_VALUE_DTYPES[datatype])
    except OverflowError:
        info = np.iinfo(DATATYPES[datatype])
        raise InvalidInputError(
            f"Input '{name}' holds a value outside {datatype}'s range "
            f"[{info.min}, {info.max}]: declare a wider datatype"
        ) from None


def _typed_array(values: Array, datatype: str, *, name: str) -> Array:
    """A numpy array a transport built: check its kind fits the declared datatype."""
    kind = values.dtype.kind
    wanted = DATATYPES[datatype].kind
    if datatype == "BYTES":
        flat = values.reshape(-1)
        out = np.empty(flat.size, dtype=object)
        out[:] = [_text(v, name=name, index=i) for i, v in enumerate(flat.tolist())]
        return out
    if kind != wanted and not (kind == "i" and wanted == "u" and values.size == 0):
        raise InvalidInputError(
            f"Input '{name}' declares datatype {datatype} but holds {values.dtype} values: "
            "send values of the declared datatype"
        )
    return values


def array_from_bytes(
    raw: bytes | memoryview,
    *,
    datatype: str,
    shape: Sequence[int],
    name: str,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Array:
    """Decode a tensor's binary form (the binary-data extension, gRPC raw contents).

    Fixed-size datatypes are little-endian values, row-major; BYTES elements are each a
    4-byte little-endian length followed by that many bytes (UTF-8 text here).

    Parameters
    ----------
    raw
        The tensor's bytes, exactly.
    datatype, shape, name
        As the request declares them.
    max_elements
        The most values the shape may declare.

    Returns
    -------
    Array
        The values shaped as `shape` (a read-only view of `raw` for fixed-size types).

    Raises
    ------
    InvalidInputError
        When the byte count does not match the shape and datatype, a BOOL byte is not 0
        or 1, or a BYTES element runs past the end or is not UTF-8.
    """
    _check_datatype(datatype, name=name)
    dims = check_shape(shape, name=name, max_elements=max_elements)
    count = math.prod(dims)
    if datatype == "BYTES":
        return _shaped(_bytes_elements(raw, count, name=name), dims, name=name)
    dtype = DATATYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInputError(
            f"Input '{name}' has shape {list(dims)} of {datatype} ({count * dtype.itemsize} "
            f"bytes) but its binary data is {len(raw)} bytes: send prod(shape) little-endian "
            "values and set binary_data_size to their byte count"
        )
    if datatype == "BOOL":
        octets = np.frombuffer(raw, dtype=np.uint8, count=count)
        if octets.size and int(octets.max()) > 1:
            raise InvalidInputError(
                f"Input '{name}' is BOOL but holds a byte other than 0 or 1: encode each "
                "bool as one byte, 0 or 1"
            )
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(dims)


def _bytes_elements(raw: bytes | memoryview, count: int, *, name: str) -> Array:
    view = memoryview(raw)
    if count * _LENGTH.size > len(view):
        # Every element carries at least its 4-byte length: refuse before allocating.
        raise InvalidInputError(
            f"Input '{name}' declares {count} BYTES elements but its {len(view)} bytes of "
            f"binary data hold at most {len(view) // _LENGTH.size}: each element is a 4-byte "
            "little-endian length, then its bytes; declare the shape of the data sent"
        )
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidInputError(
                f"Input '{name}' BYTES data ends after {i} of {count} elements: each "
                "element is a 4-byte little-endian length, then its bytes"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInputError(
                f"Input '{name}' BYTES element {i} claims {length} bytes but only "
                f"{len(view) - offset} remain: check the length prefixes"
            )
        out[i] = _utf8(bytes(view[offset : offset + length]), name=name, index=i)
        offset += length
    if offset != len(view):
        raise InvalidInputError(
            f"Input '{name}' BYTES data has {len(view) - offset} bytes past its {count} "
            "elements: send exactly prod(shape) elements"
        )
    return out


def array_to_bytes(data: Array, *, datatype: str) -> bytes:
    """The binary form of an output tensor (see `array_from_bytes` for the layout)."""
    if datatype != "BYTES":
        return np.ascontiguousarray(data, dtype=DATATYPES[datatype]).tobytes()
    parts: list[bytes] = []
    for value in data.reshape(-1).tolist():
        encoded = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


# -- inputs -> columns ----------------------------------------------------------------


def columns_from_inputs(
    schema: Schema, inputs: Sequence[InputTensor], *, model: str
) -> tuple[dict[str, Array], int]:
    """Lay a request's tensors out as the columnar batch the inference core takes.

    Parameters
    ----------
    schema
        The served release's input schema.
    inputs
        The request's tensors (one 2-D, or one 1-D per field; see the module docstring).
    model
        The model's name as requested, for messages.

    Returns
    -------
    tuple
        Field name -> column (views of the tensors, no copy), and the number of rows.

    Raises
    ------
    InvalidInputError
        When the tensors fit neither form: no inputs, a 2-D tensor with the wrong number
        of columns, an unknown or repeated name, 1-D inputs of different lengths, a
        required field without an input.
    """
    names = schema.names
    if not inputs:
        raise InvalidInputError(
            f"Request for model '{model}' has no inputs: send one 2-D input [rows, "
            f"{len(names)}] or one 1-D input per field ({_show_names(names)})"
        )
    first = inputs[0]
    if len(inputs) == 1 and len(first.shape) == 2 and not _is_field_column(first, names):
        return _matrix_columns(first, names, model=model)
    return _named_columns(schema, inputs, model=model)


def _is_field_column(tensor: InputTensor, names: Sequence[str]) -> bool:
    """A lone ``[rows, 1]`` tensor named after a field is that field's column."""
    return tensor.name in names and tensor.shape[1] == 1 and len(names) != 1


def _matrix_columns(
    tensor: InputTensor, names: Sequence[str], *, model: str
) -> tuple[dict[str, Array], int]:
    rows, width = tensor.shape
    if width != len(names):
        raise InvalidInputError(
            f"Input '{tensor.name}' has shape [{rows}, {width}] but model '{model}' takes "
            f"{len(names)} fields in schema order ({_show_names(names)}): send shape "
            f"[rows, {len(names)}], or one 1-D input per field"
        )
    data = tensor.data
    return {name: data[:, j] for j, name in enumerate(names)}, rows


def _named_columns(
    schema: Schema, inputs: Sequence[InputTensor], *, model: str
) -> tuple[dict[str, Array], int]:
    names = schema.names
    known = set(names)
    columns: dict[str, Array] = {}
    rows: int | None = None
    for tensor in inputs:
        if tensor.name not in known:
            hint = (
                f"send one 2-D input [rows, {len(names)}] alone"
                if len(tensor.shape) == 2
                else "name each 1-D input after a field"
            )
            raise InvalidInputError(
                f"Input '{tensor.name}' is not a field of model '{model}' (its fields: "
                f"{_show_names(names)}): {hint}"
            )
        if tensor.name in columns:
            raise InvalidInputError(
                f"Input '{tensor.name}' appears twice in the request: send each field once"
            )
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidInputError(
                f"Input '{tensor.name}' has shape {list(shape)}: a field's input is 1-D "
                "[rows] (or [rows, 1])"
            )
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise InvalidInputError(
                f"Input '{tensor.name}' has {shape[0]} rows but input "
                f"'{next(iter(columns))}' has {rows}: every input needs one value per row"
            )
        columns[tensor.name] = tensor.data.reshape(shape[0])
    absent = [f.name for f in schema.fields if f.required and f.name not in columns]
    if absent:
        raise InvalidInputError(
            f"Request for model '{model}' lacks input(s) {_show_names(absent)}, required "
            f"by its schema: send one 1-D input per field ({_show_names(names)}) or one "
            f"2-D input [rows, {len(names)}]"
        )
    return columns, rows or 0


def _show_names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:12])
    return shown if len(names) <= 12 else f"{shown}, ... ({len(names)} in all)"


# -- results -> outputs -----------------------------------------------------------------


def raise_for_rejections(
    rejections: Sequence[Rejection], *, model: str, release: str, n_rows: int
) -> None:
    """Fail the request when any of its rows got no prediction.

    Rows that break the schema are the client's fault (400, `InvalidInputError`); rows the
    model raised on are the model's (500, `InferenceFailedError`). The message shows the
    first few rows and their reasons (which never show a ``pii`` value).

    Parameters
    ----------
    rejections
        The request's rejections, rows relative to the request.
    model
        The model's name as requested.
    release
        The release that answered, like ``fraud:3``.
    n_rows
        The request's row count.
    """
    if not rejections:
        return
    bad_input = [r for r in rejections if r.stage != "predict"]
    chosen = bad_input or list(rejections)
    shown = "; ".join(f"row {r.row}: {r.reason}" for r in chosen[:_SHOWN_REJECTIONS])
    more = (
        f" (and {len(chosen) - _SHOWN_REJECTIONS} more)" if len(chosen) > _SHOWN_REJECTIONS else ""
    )
    if bad_input:
        raise InvalidInputError(
            f"{len(chosen)} of {n_rows} rows of the request for model '{model}' break its "
            f"schema: {shown}{more}. Fix those values and send the request again"
        )
    raise InferenceFailedError(
        f"Release {release} of model '{model}' raised on {len(chosen)} of {n_rows} rows "
        f"of the request: {shown}{more}. The other requests are served; check those rows "
        "or the model"
    )


def datatype_of(values: Array) -> str:
    """The protocol datatype for a column of predictions.

    Numbers keep their width (int64 -> INT64, float32 -> FP32); text and labels are
    BYTES; an ``object`` column takes the narrowest datatype all its values share.
    """
    kind = values.dtype.kind
    if kind in "biuf":
        for datatype, dtype in DATATYPES.items():
            if dtype.kind == kind and dtype.itemsize == values.dtype.itemsize:
                return datatype
    if kind == "O" and values.size:
        kinds = {type(v) for v in values.tolist()}
        if kinds <= {bool}:
            return "BOOL"
        if kinds <= {int}:
            return "INT64"
        if kinds <= {int, float}:
            return "FP64"
    return "BYTES"


def _as_datatype(values: Array, datatype: str) -> Array:
    if datatype == "BYTES":
        if values.dtype.kind == "O" and all(type(v) is str for v in values.tolist()):
            return values
        out = np.empty(values.size, dtype=object)
        out[:] = [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]
        return out
    if values.dtype.kind == "O":
        return values.astype(DATATYPES[datatype])
    return values


def outputs_from_part(
    predictions: Array,
    scores: Array | None,
    *,
    requested: Sequence[str] | None = None,
    model: str,
    probabilities: Array | None = None,
    classes: Sequence[str] | None = None,
) -> list[OutputTensor]:
    """The response tensors for one request's predictions.

    Parameters
    ----------
    predictions
        One prediction per row of the request.
    scores
        One float64 score per row, or None when the model gives none.
    requested
        The output names the request asks for, or None for the default outputs.
    model
        The model's name as requested, for messages.
    probabilities
        float64 ``(rows, classes)``, every class's probability, or None when the model
        gives none; sent only when `requested` names `OUTPUT_PROBABILITIES`.
    classes
        The class name of each `probabilities` column.

    Returns
    -------
    list[OutputTensor]
        ``prediction`` and, when there are scores, ``score`` (or what was requested, in
        the order requested).

    Raises
    ------
    InvalidInputError
        When the request asks for an output the model does not have.
    """
    prediction, score = OUTPUT_NAMES
    available: dict[str, Array] = {prediction: predictions}
    if scores is not None:
        available[score] = scores
    names = list(available) if requested is None else list(requested)
    if probabilities is not None:
        available[OUTPUT_PROBABILITIES] = probabilities
    outputs: list[OutputTensor] = []
    for name in names:
        values = available.get(name)
        if values is None:
            raise InvalidInputError(
                f"Request asks for output '{_shown_name(name)}' but model '{model}' has "
                f"outputs {', '.join(available)}: request one of those, or no outputs for "
                "the default ones"
            )
        if name == OUTPUT_PROBABILITIES:
            outputs.append(_probabilities(values, classes))
            continue
        datatype = datatype_of(values)
        outputs.append(
            OutputTensor(
                name=name,
                datatype=datatype,
                shape=(len(values),),
                data=_as_datatype(values, datatype),
            )
        )
    return outputs


def _probabilities(values: Array, classes: Sequence[str] | None) -> OutputTensor:
    data = np.asarray(values, dtype=np.float64)
    names = list(classes) if classes is not None else [str(j) for j in range(data.shape[1])]
    return OutputTensor(
        name=OUTPUT_PROBABILITIES,
        datatype="FP64",
        shape=(int(data.shape[0]), int(data.shape[1])),
        data=data,
        parameters={"classes": names},
    )


def _shown_name(name: str) -> str:
    """A client's output name, cut short for a message."""
    return name if len(name) <= 64 else f"{name[:64]}..."
