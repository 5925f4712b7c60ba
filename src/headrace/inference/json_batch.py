"""Typed decoding of a batch of JSON events straight into columns: the fast path.

Decoding each event into a dict, then gathering dicts into columns, costs several
microseconds per event in Python. When every event of a batch is well-formed, one msgspec
decode of the whole batch (as one JSON array) into typed structs does the same work in C,
and the columns come out as typed numpy arrays that `validate` checks with vectorised
operations.

The fast path is all-or-nothing per batch: any event that msgspec refuses (bad JSON, a
wrong type, a missing required field, NaN tokens) makes `TypedBatchDecoder.decode` return
None, and the caller takes its per-event path, which finds and explains each bad event.
So the fast path never changes what is accepted or rejected, only how fast good batches go.

With ``text=True`` every field decodes as text: for CSV rows (JSON objects of strings),
whose values `validate` parses per field type with ``coerce_strings``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from headrace.inference.validate import MISSING
from headrace.release.schema import Schema
from headrace.types import Array, Columns

__all__ = ["DecodedBatch", "TypedBatchDecoder"]

_ID = "id"
_TIME = "time"

# The Python type msgspec decodes each schema type into. Timestamps stay as they came
# (epoch seconds or ISO text): `validate` parses them.
_TYPES: dict[str, Any] = {
    "float": float,
    "int": int,
    "bool": bool,
    "string": str,
    "category": str,
    "timestamp": float | str,
}
_NUMPY: dict[str, Any] = {"float": np.float64, "int": np.int64, "bool": np.bool_}


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A batch decoded by the fast path.

    Attributes
    ----------
    columns
        Schema field name -> column (typed numpy for numeric fields, object otherwise).
    ids
        The id field of each event as text, or None when no id field is configured.
    times
        The event-time field of each event as sent, or None when none is configured.
    """

    columns: Columns
    ids: list[str] | None
    times: list[Any] | None


class TypedBatchDecoder:
    """Decodes whole batches of JSON objects into typed columns for one schema.

    Parameters
    ----------
    schema
        The release schema; its fields become the decoded columns.
    id_field
        The event id key (``str`` or ``int`` in the event), or None.
    time_field
        The event time key (epoch seconds or ISO text), or None.
    text
        Decode every schema field as text (CSV rows), to be parsed by validation.
    """

    def __init__(
        self,
        schema: Schema,
        *,
        id_field: str | None = None,
        time_field: str | None = None,
        text: bool = False,
    ) -> None:
        fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
        rename: dict[str, str] = {}
        self._names: list[str] = []
        self._kinds: list[str] = []
        for i, field in enumerate(schema.fields):
            attr = f"f{i}"
            rename[attr] = field.name
            kind = str if text else _TYPES[field.type]
            if field.nullable and not text:
                kind = kind | None
            if field.required:
                fields.append((attr, kind))
            else:  # absent stays absent: validate applies the default, as per event
                fields.append((attr, kind | msgspec.UnsetType, msgspec.UNSET))
            self._names.append(field.name)
            self._kinds.append("string" if text else field.type)
        self._id = id_field is not None
        self._time = time_field is not None
        names = set(schema.names)
        if id_field is not None:
            if id_field in names:
                raise ValueError(f"id field {id_field!r} is a schema field")
            rename[_ID] = id_field
            fields.append((_ID, str | int))
        self._time_attr = _TIME
        if time_field is not None and time_field in names:
            self._time_attr = f"f{schema.names.index(time_field)}"
        elif time_field is not None:
            rename[_TIME] = time_field
            fields.append((_TIME, Any, None))
        event = msgspec.defstruct("Event", fields, rename=rename, gc=False, kw_only=True)
        self._attrs = [f"f{i}" for i in range(len(self._names))]
        # All-float schemas (the common case of numeric features) gather every row as
        # one tuple and convert the batch to a matrix in one numpy call.
        self._row = operator.attrgetter(*self._attrs) if len(self._attrs) > 1 else None
        # (numpy turns None into NaN without a word, so nullable fields stay out of it)
        self._nullable = [field.nullable and not text for field in schema.fields]
        self._all_float = not any(self._nullable) and all(k == "float" for k in self._kinds)
        self._decoder = msgspec.json.Decoder(list[event])  # type: ignore[valid-type]

    def decode(self, values: Sequence[bytes]) -> DecodedBatch | None:
        """Columns of the batch, or None when any event needs the per-event path."""
        try:
            events = self._decoder.decode(b"[" + b",".join(values) + b"]")
        except msgspec.MsgspecError:
            return None
        n = len(events)
        if n != len(values):  # an event that was several JSON values glued together
            return None
        columns: dict[str, Array] = {}
        if self._all_float and self._row is not None:
            try:
                matrix = np.array(list(map(self._row, events)), dtype=np.float64)
            except (TypeError, ValueError):
                matrix = None  # a null or an absent value: column by column below
            if matrix is not None:
                columns = {name: matrix[:, j] for j, name in enumerate(self._names)}
        for name, attr, kind, nullable in zip(
            self._names, self._attrs, self._kinds, self._nullable, strict=True
        ):
            if name in columns:
                continue
            raw = [getattr(event, attr) for event in events]
            columns[name] = _column(raw, kind, n, nullable=nullable)
        ids = None
        if self._id:
            ids = [str(getattr(event, _ID)) for event in events]
        times = None
        if self._time:
            attr = self._time_attr
            times = [getattr(event, attr) for event in events]
        return DecodedBatch(columns=columns, ids=ids, times=times)


def _column(raw: list[Any], kind: str, n: int, *, nullable: bool) -> Array:
    """A typed array when every value has the column's type, else an object array."""
    dtype = _NUMPY.get(kind)
    if dtype is not None and not (nullable and None in raw):
        try:
            return np.fromiter(raw, dtype=dtype, count=n)
        except (TypeError, ValueError, OverflowError):
            pass  # a null or an absent value among them: validate takes object columns
    column = np.fromiter(raw, dtype=object, count=n)
    absent = [i for i, value in enumerate(raw) if value is msgspec.UNSET]
    if absent:
        column[absent] = MISSING
    return column
