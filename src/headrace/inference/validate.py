"""Validation of a columnar batch against the release schema.

`validate` checks a whole batch column by column and returns the typed columns of the
valid rows plus one `Rejection` per invalid row; it never raises for bad data. Three
kinds of column arrive:

- typed numpy arrays (Parquet, Arrow; nulls as a `numpy.ma.MaskedArray` mask or NaT):
  checked with vectorised numpy operations;
- ``object`` arrays of Python values (JSON records, see `records_to_columns`): element
  types are checked strictly, as msgspec would (the JSON string ``"1.5"`` is not a float,
  a bool is not an int, an int is a fine float, an integral float is a fine int), with a
  fast path when the whole column has one acceptable type;
- text (CSV, ``coerce_strings=True``): every value is parsed per field type and ``""``
  is null.

Reasons read like msgspec errors (``Expected `float`, got `str` - at `$.amount` ``) and
never show the value of a ``pii`` field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from headrace.errors import ValidationError
from headrace.release.schema import Field, Schema
from headrace.types import Array, Columns

__all__ = ["MISSING", "Rejection", "ValidatedBatch", "records_to_columns", "validate"]


class _MissingType:
    """The type of `MISSING`; one instance only."""

    __slots__ = ()
    _instance: _MissingType | None = None

    def __new__(cls) -> _MissingType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _MissingType()
"""Marks a field absent from an event (as opposed to present and null) in an object column."""


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """Why one row of a batch got no prediction.

    Parameters
    ----------
    row
        The row's index in the batch (or file) it came from, 0-based.
    field
        The field at fault, or None when the row as a whole failed.
    reason
        What is wrong, msgspec-style (``Expected `float`, got `str` - at `$.amount` ``);
        never contains the value of a ``pii`` field.
    stage
        Where it failed: ``decode``, ``validate`` or ``predict``.
    """

    row: int
    field: str | None
    reason: str
    stage: str = "validate"


@dataclass(frozen=True, slots=True)
class ValidatedBatch:
    """The valid rows of a batch, typed, and a rejection for each of the others.

    Attributes
    ----------
    columns
        One array per schema field, valid rows only: float64 for ``float`` and
        ``timestamp`` (epoch seconds) fields, int64 for ``int`` (float64 with NaN when a
        valid row is null), bool for ``bool`` (float64 0/1/NaN with nulls), object for
        ``string`` and ``category`` (None for null). Nulls of float64 columns are NaN.
    rows
        The int64 index, in the input batch, of each valid row.
    rejections
        One per invalid row, sorted by row, for the first failing field in schema order.
    n_rows
        The number of rows of the input batch.
    """

    columns: dict[str, Array]
    rows: npt.NDArray[np.int64]
    rejections: list[Rejection]
    n_rows: int


# Failure codes, in the order a row's value is checked.
_OK: Final = 0
_MISSING: Final = 1
_NULL: Final = 2
_WRONG_TYPE: Final = 3
_UNPARSABLE: Final = 4
_OUT_OF_RANGE: Final = 5
_NAN: Final = 6
_INF: Final = 7
_BELOW: Final = 8
_ABOVE: Final = 9
_NOT_IN: Final = 10
_TOO_LONG: Final = 11

_EXPECTED: Final = {
    "float": "`float`",
    "int": "`int`",
    "bool": "`bool`",
    "string": "`str`",
    "category": "`str`",
    "timestamp": "`timestamp` (ISO 8601 `str` or epoch seconds)",
}
_KIND_NAMES: Final = {"f": "float", "i": "int", "u": "int", "b": "bool", "M": "datetime"}
_TRUE_TEXT: Final = frozenset({"true", "1"})
_FALSE_TEXT: Final = frozenset({"false", "0"})
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class _Check:
    """One field's column while it is being checked."""

    __slots__ = ("code", "field", "n", "null", "raw", "typed_kind", "values")

    def __init__(self, field: Field, n: int) -> None:
        self.field = field
        self.n = n
        self.code: npt.NDArray[np.int8] = np.zeros(n, dtype=np.int8)
        self.null: npt.NDArray[np.bool_] | None = None
        self.values: Array = _placeholder(field, n)
        self.raw: Array | None = None
        self.typed_kind: str | None = None  # dtype kind when the raw column is typed

    def flag(self, mask: npt.NDArray[np.bool_], code: int) -> None:
        """Give `code` to the rows in `mask` that have no failure yet."""
        self.code[mask & (self.code == _OK)] = code

    def set_null(self, mask: npt.NDArray[np.bool_]) -> None:
        self.null = mask if self.null is None else self.null | mask

    def good(self) -> npt.NDArray[np.bool_]:
        """Rows with no failure so far that are not null."""
        good: npt.NDArray[np.bool_] = self.code == _OK
        if self.null is not None:
            good &= ~self.null
        return good

    def reason(self, row: int) -> str:
        code = int(self.code[row])
        field = self.field
        at = f" - at `$.{field.name}`"
        raw = None if self.raw is None else self.raw[row]
        if code == _MISSING:
            return f"Missing required field `{field.name}`"
        if code == _NULL:
            return f"Expected {_EXPECTED[field.type]}, got `null`{at}"
        if code == _WRONG_TYPE:
            if self.typed_kind is None:
                got = _json_type(raw)
            else:
                got = _KIND_NAMES.get(
                    self.typed_kind, str(self.raw.dtype if self.raw is not None else "")
                )
            return f"Expected {_EXPECTED[field.type]}, got `{got}`{at}"
        if code == _NAN:
            return f"NaN not allowed{at}"
        if code == _INF:
            sign = "-" if float(self.values[row] if raw is None else raw) < 0 else ""
            return f"{sign}Infinity not allowed{at}"
        shown = "<redacted>" if field.pii else _show(raw)
        if code == _UNPARSABLE:
            return f"Cannot parse {shown} as {_EXPECTED[field.type]}{at}"
        if code == _OUT_OF_RANGE:
            return f"Integer {shown} out of range for int64{at}"
        if code in (_BELOW, _ABOVE):
            if not field.pii and field.type != "timestamp":
                value = self.values[row]
                shown = _show(int(value) if field.type == "int" else float(value))
            if code == _BELOW:
                return f"Value {shown} below minimum {float(field.min or 0)!r}{at}"
            return f"Value {shown} above maximum {float(field.max or 0)!r}{at}"
        if code == _NOT_IN:
            return f"Value {shown} not one of {_show_values(field.values or [])}{at}"
        length = len(raw) if isinstance(raw, str) else 0
        return f"Expected `str` of length <= {field.max_length}, got length {length}{at}"


def _placeholder(field: Field, n: int) -> Array:
    if field.type == "int":
        return np.zeros(n, dtype=np.int64)
    if field.type == "bool":
        return np.zeros(n, dtype=np.bool_)
    if field.type in ("string", "category"):
        return np.full(n, None, dtype=object)
    return np.zeros(n, dtype=np.float64)


def _show(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_values(values: Sequence[str]) -> str:
    if len(values) <= 10:
        return repr(list(values))
    return f"{list(values[:10])!r} (and {len(values) - 10} more)"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple | np.ndarray):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, dt.datetime | np.datetime64):
        return "datetime"
    return type(value).__name__


# -- per value-kind classification of object columns -------------------------------


def _kind_of(t: type) -> str:
    """Group a Python type into the kinds validation tells apart."""
    if t is _MissingType:
        return "missing"
    if t is type(None):
        return "null"
    if issubclass(t, bool | np.bool_):
        return "bool"
    if issubclass(t, int | np.integer):
        return "int"
    if issubclass(t, float | np.floating):
        return "float"
    if issubclass(t, str):
        return "str"
    if issubclass(t, dt.date | np.datetime64):
        return "datetime"
    return "other"


_ACCEPTED: Final = {
    "float": frozenset({"int", "float"}),
    "int": frozenset({"int", "float"}),
    "bool": frozenset({"bool"}),
    "string": frozenset({"str"}),
    "category": frozenset({"str"}),
    "timestamp": frozenset({"int", "float", "str", "datetime"}),
}


class _Kinds:
    """Masks of the value kinds present in an object column, computed on demand."""

    def __init__(self, data: npt.NDArray[np.object_]) -> None:
        self.data = data
        self.kind_of: dict[type, str] = {t: _kind_of(t) for t in set(map(type, data))}
        self.groups = set(self.kind_of.values())
        self._codes: npt.NDArray[np.int8] | None = None
        self._numbers: dict[str, int] = {}

    def mask(self, *kinds: str) -> npt.NDArray[np.bool_] | None:
        """Rows holding a value of one of `kinds`, or None when there is none."""
        present = [k for k in kinds if k in self.groups]
        if not present:
            return None
        n = len(self.data)
        if len(present) == len(self.groups):
            return np.ones(n, dtype=np.bool_)
        if self._codes is None:  # one pass: every row's kind as a small int
            self._numbers = {kind: i for i, kind in enumerate(sorted(self.groups))}
            code_of = {t: self._numbers[kind] for t, kind in self.kind_of.items()}
            self._codes = np.fromiter(
                (code_of[t] for t in map(type, self.data)), dtype=np.int8, count=n
            )
        return np.isin(self._codes, [self._numbers[k] for k in present])


def _check_objects(c: _Check, data: npt.NDArray[np.object_], *, coerce: bool) -> None:
    field, n = c.field, c.n
    kinds = _Kinds(data)
    missing = kinds.mask("missing")
    if missing is not None:
        if field.required:
            c.flag(missing, _MISSING)
        else:
            data = data.copy()
            data[missing] = field.default
            kinds = _Kinds(data)
    c.raw = data
    null = kinds.mask("null")
    if null is not None:
        c.set_null(null)
    if field.required and missing is not None:
        c.set_null(missing)  # keeps the placeholder rows out of the value checks
    accepted = _ACCEPTED[field.type]
    text = kinds.mask("str") if coerce and "str" in kinds.groups else None
    for kind in kinds.groups:
        if kind in ("missing", "null") or kind in accepted or (kind == "str" and coerce):
            continue
        bad = kinds.mask(kind)
        if bad is not None:
            c.flag(bad, _WRONG_TYPE)

    if field.type in ("string", "category"):
        strings = kinds.mask("str")
        values = np.full(n, None, dtype=object)
        if strings is not None:
            values[strings] = data[strings]
            if coerce:
                empty = _empty_strings(data, strings)
                values[empty] = None
                c.set_null(empty)
        c.values = values
        return
    if text is not None:
        _parse_text(c, data, text, parse_timestamp=_parse_timestamp_text)
    if field.type == "float":
        nums = kinds.mask("int", "float")
        if nums is not None:
            _put_floats(c, data, nums)
    elif field.type == "int":
        ints = kinds.mask("int")
        if ints is not None:
            _put_ints(c, data, ints)
        floats = kinds.mask("float")
        if floats is not None:
            _put_integral_floats(c, data[floats].astype(np.float64), floats)
    elif field.type == "bool":
        bools = kinds.mask("bool")
        if bools is not None:
            c.values[bools] = data[bools].astype(np.bool_)
    else:  # timestamp
        nums = kinds.mask("int", "float")
        if nums is not None:
            _put_floats(c, data, nums)
        strings = kinds.mask("str") if text is None else None
        if strings is not None:  # JSON has no timestamp type: ISO 8601 text is the norm
            _parse_text(c, data, strings, parse_timestamp=_parse_iso, empty_is_null=False)
        stamps = kinds.mask("datetime")
        if stamps is not None:
            for i in np.flatnonzero(stamps).tolist():
                seconds = _datetime_seconds(data[i])
                if seconds is None:
                    c.set_null(_one(n, i))
                else:
                    c.values[i] = seconds


def _empty_strings(
    data: npt.NDArray[np.object_], strings: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Rows of `strings` (rows known to hold a str) whose value is ""."""
    empty = np.zeros(len(data), dtype=np.bool_)
    empty[strings] = data[strings] == ""
    return empty


def _one(n: int, i: int) -> npt.NDArray[np.bool_]:
    mask = np.zeros(n, dtype=np.bool_)
    mask[i] = True
    return mask


def _put_floats(c: _Check, data: npt.NDArray[np.object_], rows: npt.NDArray[np.bool_]) -> None:
    try:
        c.values[rows] = data[rows].astype(np.float64)
    except OverflowError:  # an int beyond float range: find it
        for i in np.flatnonzero(rows).tolist():
            try:
                c.values[i] = float(data[i])
            except OverflowError:
                c.flag(_one(c.n, i), _OUT_OF_RANGE)


def _put_ints(c: _Check, data: npt.NDArray[np.object_], rows: npt.NDArray[np.bool_]) -> None:
    try:
        c.values[rows] = data[rows].astype(np.int64)
    except OverflowError:
        for i in np.flatnonzero(rows).tolist():
            value = int(data[i])
            if _INT64_MIN <= value <= _INT64_MAX:
                c.values[i] = value
            else:
                c.flag(_one(c.n, i), _OUT_OF_RANGE)


def _put_integral_floats(
    c: _Check, floats: npt.NDArray[np.float64], rows: npt.NDArray[np.bool_]
) -> None:
    """Accept floats with an integral value into an int column (1.0 -> 1)."""
    idx = np.flatnonzero(rows)
    with np.errstate(invalid="ignore"):
        nan = np.isnan(floats)
        inf = np.isinf(floats)
        fractional = ~nan & ~inf & (floats != np.floor(floats))
        too_big = ~nan & ~inf & ((floats < -(2.0**63)) | (floats >= 2.0**63))
    for code, mask in ((_NAN, nan), (_INF, inf), (_WRONG_TYPE, fractional)):
        if mask.any():
            c.flag(_scatter(c.n, idx[mask]), code)
    if too_big.any():
        c.flag(_scatter(c.n, idx[too_big]), _OUT_OF_RANGE)
    fine = ~(nan | inf | fractional | too_big)
    c.values[idx[fine]] = floats[fine].astype(np.int64)


def _scatter(n: int, idx: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(n, dtype=np.bool_)
    mask[idx] = True
    return mask


# -- text (CSV) -----------------------------------------------------------------------


def _parse_text(
    c: _Check,
    data: npt.NDArray[np.object_],
    rows: npt.NDArray[np.bool_],
    *,
    parse_timestamp: Callable[[str], float],
    empty_is_null: bool = True,
) -> None:
    """Parse the strings in `rows` for `c.field`'s (non-text) type."""
    field = c.field
    empty = _empty_strings(data, rows)
    if empty_is_null and empty.any():
        c.set_null(empty)
        rows = rows & ~empty
    idx = np.flatnonzero(rows)
    if idx.size == 0:
        return
    texts = data[idx]
    if field.type == "float":
        try:
            c.values[idx] = texts.astype(np.float64)
        except (ValueError, OverflowError):
            _parse_each(c, idx, texts, float)
    elif field.type == "int":
        try:
            c.values[idx] = texts.astype(np.int64)
        except (ValueError, OverflowError):
            _parse_each(c, idx, texts, _parse_int)
    elif field.type == "bool":
        _parse_each(c, idx, texts, _parse_bool)
    else:  # timestamp
        _parse_each(c, idx, texts, parse_timestamp)


def _parse_each(
    c: _Check,
    idx: npt.NDArray[np.intp],
    texts: npt.NDArray[np.object_],
    parse: Callable[[str], Any],
) -> None:
    bad: list[int] = []
    out_of_range: list[int] = []
    for i, text in zip(idx.tolist(), texts.tolist(), strict=True):
        try:
            c.values[i] = parse(text)
        except OverflowError:
            out_of_range.append(i)
        except ValueError:
            bad.append(i)
    if bad:
        c.flag(_scatter(c.n, np.asarray(bad, dtype=np.intp)), _UNPARSABLE)
    if out_of_range:
        c.flag(_scatter(c.n, np.asarray(out_of_range, dtype=np.intp)), _OUT_OF_RANGE)


def _parse_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        number = float(text)  # "3.0", as spreadsheets and pandas write ints
        if not number.is_integer():
            raise
        value = int(number)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise OverflowError(text)
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE_TEXT:
        return True
    if lowered in _FALSE_TEXT:
        return False
    raise ValueError(text)


def _parse_timestamp_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return _parse_iso(text)


def _parse_iso(text: str) -> float:
    stamp = dt.datetime.fromisoformat(text.strip())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def _datetime_seconds(value: Any) -> float | None:
    """Epoch seconds of a datetime/date/datetime64 (naive means UTC); None for NaT."""
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return None
        return float(value.astype("datetime64[us]").astype(np.int64)) / 1e6
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        seconds: float = value.timestamp()
        return seconds
    midnight = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return midnight.timestamp()


# -- typed (Parquet/Arrow) columns ----------------------------------------------------


def _check_typed(c: _Check, data: Array) -> None:
    field, kind = c.field, data.dtype.kind
    c.typed_kind = kind
    c.raw = data
    if field.type == "float" and kind in "fiu":
        c.values = data.astype(np.float64)
    elif field.type == "int" and kind in "iu":
        if kind == "u" and data.dtype.itemsize >= 8:
            c.flag(data > np.uint64(_INT64_MAX), _OUT_OF_RANGE)
        c.values = data.astype(np.int64)
    elif field.type == "int" and kind == "f":
        _put_integral_floats(c, data.astype(np.float64), np.ones(c.n, dtype=np.bool_))
    elif field.type == "bool" and kind == "b":
        c.values = data.astype(np.bool_)
    elif field.type == "timestamp" and kind in "fiu":
        c.values = data.astype(np.float64)
    elif field.type == "timestamp" and kind == "M":
        nat = np.isnat(data)
        if nat.any():
            c.set_null(nat)
        micros = data.astype("datetime64[us]").astype(np.int64)
        c.values = micros / 1e6
    else:
        c.flag(np.ones(c.n, dtype=np.bool_) if c.null is None else ~c.null, _WRONG_TYPE)


# -- value checks shared by every kind of column --------------------------------------


def _check_values(c: _Check) -> None:
    field = c.field
    if field.type in ("float", "timestamp", "int"):
        good = c.good()
        values = c.values
        if values.dtype.kind == "f":
            if not field.allow_nan:
                c.flag(good & np.isnan(values), _NAN)
                c.flag(good & np.isinf(values), _INF)
        if field.min is not None:
            with np.errstate(invalid="ignore"):
                c.flag(good & (values < field.min), _BELOW)
        if field.max is not None:
            with np.errstate(invalid="ignore"):
                c.flag(good & (values > field.max), _ABOVE)
    elif field.type == "category":
        allowed = set(field.values or ())
        good = c.good()
        idx = np.flatnonzero(good)
        if idx.size:
            ok = np.fromiter((v in allowed for v in c.values[idx]), dtype=np.bool_, count=idx.size)
            if not ok.all():
                c.flag(_scatter(c.n, idx[~ok]), _NOT_IN)
    elif field.type == "string" and field.max_length is not None:
        good = c.good()
        idx = np.flatnonzero(good)
        if idx.size:
            lengths = np.fromiter(map(len, c.values[idx]), dtype=np.int64, count=idx.size)
            c.flag(_scatter(c.n, idx[lengths > field.max_length]), _TOO_LONG)
    if c.null is not None and not field.nullable:
        c.flag(c.null, _NULL)


def _check_column(field: Field, raw: Array | None, *, n: int, coerce: bool) -> _Check:
    c = _Check(field, n)
    if raw is None:
        if field.required:
            c.flag(np.ones(n, dtype=np.bool_), _MISSING)
            return c
        raw = np.full(n, field.default, dtype=object)
    if len(raw) != n:
        raise ValidationError(
            f"Column has {len(raw)} values but the batch has n_rows={n}: "
            "every column must have one value per row",
            path=f"$.{field.name}",
        )
    if not isinstance(raw, np.ndarray):  # a list: keep every element as it is
        raw = np.fromiter(raw, dtype=object, count=len(raw))
    mask = np.ma.getmaskarray(raw) if isinstance(raw, np.ma.MaskedArray) else None
    data = np.asarray(np.ma.getdata(raw))
    if data.dtype.kind in "UST":
        data = data.astype(object)
    if mask is not None and mask.any():
        if data.dtype.kind == "O":
            data = data.copy()
            data[mask] = None
        else:
            c.set_null(mask)
    if data.dtype.kind == "O":
        _check_objects(c, data, coerce=coerce)
    else:
        _check_typed(c, data)
    _check_values(c)
    return c


def _finish(field: Field, values: Array, null: npt.NDArray[np.bool_] | None) -> Array:
    """Give a column of valid rows its final dtype (see `ValidatedBatch.columns`)."""
    has_null = null is not None and bool(null.any())
    if field.type in ("string", "category"):
        if has_null:
            values = values.copy()
            values[null] = None
        return values
    if field.type in ("int", "bool") and not has_null and values.dtype.kind != "f":
        return values
    out = values.astype(np.float64)
    if has_null:
        out[null] = np.nan
    return out


def validate(
    schema: Schema, columns: Columns, *, n_rows: int, coerce_strings: bool = False
) -> ValidatedBatch:
    """Check a columnar batch against `schema`.

    Parameters
    ----------
    schema
        The release's input schema.
    columns
        Field name -> column of `n_rows` values. A field without a column is missing in
        every row; columns of unknown fields are ignored. Object columns may hold
        `MISSING` (absent) and None (null); a `numpy.ma.MaskedArray` mask and NaT mark
        nulls in typed columns.
    n_rows
        The number of rows of the batch.
    coerce_strings
        Parse text values per field type, ``""`` being null (for CSV, where every value
        arrives as text). Off, a string is only accepted by ``string``, ``category`` and
        ``timestamp`` fields.

    Returns
    -------
    ValidatedBatch
        The typed columns of the valid rows, their indices, and one rejection per invalid
        row (for its first failing field in schema order).

    Raises
    ------
    ValidationError
        Only for a malformed batch: a column whose length is not `n_rows`.
    """
    rejected = np.zeros(n_rows, dtype=np.bool_)
    rejections: list[Rejection] = []
    checks: list[_Check] = []
    passed = _clean_floats(schema, columns, n_rows=n_rows)
    for field in schema.fields:
        if field.name in passed:
            continue
        c = _check_column(field, columns.get(field.name), n=n_rows, coerce=coerce_strings)
        checks.append(c)
        failed = (c.code != _OK) & ~rejected
        idx = np.flatnonzero(failed)
        if idx.size:
            rejected[idx] = True
            rejections.extend(
                Rejection(row=i, field=field.name, reason=c.reason(i)) for i in idx.tolist()
            )
    finished: dict[str, Array] = {}
    if rejections:
        keep = np.flatnonzero(~rejected)
        rejections.sort(key=lambda r: r.row)
        for c in checks:
            null = None if c.null is None else c.null[keep]
            finished[c.field.name] = _finish(c.field, c.values[keep], null)
        for name, column in passed.items():
            finished[name] = column[keep]
    else:
        keep = np.arange(n_rows)
        for c in checks:
            finished[c.field.name] = _finish(c.field, c.values, c.null)
        finished.update(passed)
    out = {field.name: finished[field.name] for field in schema.fields}  # schema order
    return ValidatedBatch(
        columns=out, rows=keep.astype(np.int64), rejections=rejections, n_rows=n_rows
    )


def _clean_floats(schema: Schema, columns: Columns, *, n_rows: int) -> dict[str, Array]:
    """The ``float`` fields whose columns are plain float64 arrays with every value valid
    (finite, or NaN where the field allows it; within its range), checked in one pass
    over all of them; empty when any value fails (the field-by-field check then finds
    and explains it) or no column qualifies.

    A batch of well-formed numeric events is the common case, and checking its columns
    one by one costs about 25 us each in fixed numpy calls, most of a small batch's
    validation; the columns passed through are the caller's arrays, not copies.
    """
    fields: list[Field] = []
    arrays: list[Array] = []
    for field in schema.fields:
        if field.type != "float":
            continue
        column = columns.get(field.name)
        if (
            type(column) is not np.ndarray
            or column.dtype != np.float64
            or column.ndim != 1
            or len(column) != n_rows
        ):
            continue
        fields.append(field)
        arrays.append(column)
    if not fields or n_rows == 0:
        return {}
    matrix = np.stack(arrays)
    with np.errstate(invalid="ignore"):
        if any(f.allow_nan for f in fields):
            nan_ok = np.array([f.allow_nan for f in fields])[:, None]
            bad = np.isinf(matrix) | (np.isnan(matrix) & ~nan_ok)
        else:
            bad = ~np.isfinite(matrix)
        lows = [-np.inf if f.min is None else float(f.min) for f in fields]
        highs = [np.inf if f.max is None else float(f.max) for f in fields]
        if any(np.isfinite(lows)):
            bad |= matrix < np.array(lows)[:, None]
        if any(np.isfinite(highs)):
            bad |= matrix > np.array(highs)[:, None]
    if bad.any():
        return {}
    return {f.name: column for f, column in zip(fields, arrays, strict=True)}


def records_to_columns(
    records: Sequence[Mapping[str, Any]], *, names: Sequence[str]
) -> dict[str, npt.NDArray[np.object_]]:
    """Turn decoded JSON objects into object columns for `validate`.

    Parameters
    ----------
    records
        One mapping per row.
    names
        The fields to extract (usually ``schema.names``); other keys are ignored.

    Returns
    -------
    dict
        Name -> object array of the rows' values, with `MISSING` where a record lacks the
        key (None stays None: a present null).
    """
    n = len(records)
    return {
        name: np.fromiter((r.get(name, MISSING) for r in records), dtype=object, count=n)
        for name in names
    }
