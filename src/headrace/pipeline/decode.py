"""Event decoding for the worker: bytes in, ids, event times and fields out, or a reason.

One event must never stop a worker: whatever one event's bytes make a decoder, an id or an
event time raise (a `RecursionError` from 1,000 levels of nesting, an `OverflowError` from
an event time of ``1e308``, a lone surrogate in an id), that event becomes a failure with
its reason and stage, to be dead-lettered, and its batch goes on. A restarted worker would
meet the same bytes again, so an escaped exception is a crash loop, not a retry.

Two paths give the same answer (a property test holds them to it):

- the typed fast path decodes a whole batch in one msgspec call (`TypedBatchDecoder`) and
  is all-or-nothing: any event it cannot take, for any reason, sends the batch to
- the per-event path, which decodes, checks and explains each event on its own.

CSV rows from a file source arrive as JSON objects of strings marked with the
``content-type: csv`` header; their batches are decoded as text and validated with
``coerce_strings`` (each value parsed per its schema field type, as ``headrace predict``
does), so a CSV source types its rows as a JSON one does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import numpy as np
import orjson

from headrace.inference.json_batch import TypedBatchDecoder
from headrace.release.schema import Schema
from headrace.streams.base import Message
from headrace.streams.file import CONTENT_TYPE_HEADER, CSV_CONTENT_TYPE, CSV_ERROR_HEADER
from headrace.types import Columns

# Internal: `Worker` is the way in (its property tests and fuzz harness reach in too).
__all__: list[str] = []

Failure = tuple[int, str, str, str | None]
"""(index in the batch, stage, reason, field) of an event that becomes a dead letter."""

_ID_TYPES = (str, int)
# Epoch seconds a datetime can hold (years 1 to 9999): beyond, no time is meant.
_MIN_SECONDS: Final = -62_135_596_800.0
_MAX_SECONDS: Final = 253_402_300_799.0


class _BadTimeError(Exception):
    """An event time that is there but cannot be a time (raised and caught here only)."""


def event_time_ms(value: Any, *, text_numbers: bool = False) -> int | None:
    """Epoch milliseconds from epoch seconds or ISO-8601 text; None when absent.

    None, booleans and text that is no ISO-8601 time give None (the broker timestamp
    stands in, as before); a number or time outside years 1-9999, NaN or infinity raise
    `_BadTimeError`. `text_numbers` reads numeric text as epoch seconds (CSV cells).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if text_numbers:
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return None
            try:
                return int(moment.timestamp() * 1000)
            except (OverflowError, ValueError, OSError) as exc:
                raise _BadTimeError from exc
    if isinstance(value, int):
        if not _MIN_SECONDS <= value <= _MAX_SECONDS:  # compared as ints: no overflow
            raise _BadTimeError
        return value * 1000
    if isinstance(value, float):
        if not (math.isfinite(value) and _MIN_SECONDS <= value <= _MAX_SECONDS):
            raise _BadTimeError
        return int(value * 1000)
    return None


def _times_ms(values: list[Any], *, text_numbers: bool) -> list[int | None]:
    """`event_time_ms` of each value; numbers in one numpy pass (the common case)."""
    if set(map(type, values)) <= {float, int}:  # (bool is neither: type(), not isinstance)
        try:
            seconds = np.fromiter(values, dtype=np.float64, count=len(values))
        except OverflowError:  # an int beyond a double: out of range, said below
            seconds = None
        if seconds is not None and bool(
            ((seconds >= _MIN_SECONDS) & (seconds <= _MAX_SECONDS)).all()  # NaN fails too
        ):
            ms: list[int | None] = (seconds * 1000.0).astype(np.int64).tolist()
            return ms
    return [event_time_ms(value, text_numbers=text_numbers) for value in values]


def _time_reason(field_name: str) -> str:
    return (
        "Event time out of range (epoch seconds or ISO-8601 within years 1-9999) - at "
        f"`$.{field_name}`"
    )


TEXT_ROW_HEADERS: Final = frozenset({CONTENT_TYPE_HEADER, CSV_ERROR_HEADER})
"""Header names that can mark a CSV-like row: a batch without any is JSON throughout."""


def event_kind(message: Message) -> str:
    """``csv`` for a CSV row (or malformed row) of a file source, else ``json``."""
    for name, value in message.headers:
        if (name == CONTENT_TYPE_HEADER and value == CSV_CONTENT_TYPE) or (
            name == CSV_ERROR_HEADER
        ):
            return "csv"
    return "json"


@dataclass(slots=True)
class DecodedEvents:
    """What decoding one batch gave.

    Attributes
    ----------
    candidates
        Index in the batch of every event that decoded, in order.
    ids
        Each candidate's id (the id field as text, or its source position).
    times_ms
        Each candidate's event time in epoch ms, or None for the broker timestamp.
    columns
        Schema field -> column over the candidates (fast path), or None.
    records
        The decoded objects of the candidates (per-event path); empty on the fast path.
    coerce_strings
        True when the fields are CSV text to parse per field type.
    failures
        One per event that did not decode.
    """

    candidates: list[int]
    ids: list[str]
    times_ms: list[int | None]
    columns: Columns | None
    records: list[Any] = field(default_factory=list)
    coerce_strings: bool = False
    failures: list[Failure] = field(default_factory=list)


class EventDecoder:
    """Decodes a worker's batches for one schema and spec; built once per worker.

    Parameters
    ----------
    schema
        The release schema (the fast path decodes its fields into typed columns).
    id_field
        The event id key, or None to use source positions.
    time_field
        The event time key, or None to use broker timestamps.
    max_event_bytes
        Larger events fail at stage ``decode``.
    """

    def __init__(
        self,
        schema: Schema,
        *,
        id_field: str | None,
        time_field: str | None,
        max_event_bytes: int,
    ) -> None:
        self.id_field = id_field
        self.time_field = time_field
        self.max_event_bytes = max_event_bytes
        self._fast: dict[bool, TypedBatchDecoder] | None = None
        if id_field is None or id_field not in schema.names:
            # (an id that doubles as a feature: the per-event path handles that)
            self._fast = {
                text: TypedBatchDecoder(schema, id_field=id_field, time_field=time_field, text=text)
                for text in (False, True)
            }

    def decode(self, messages: Sequence[Message], *, csv: bool = False) -> DecodedEvents:
        """Decode a batch whose events are all of one kind (`csv` or JSON; `event_kind`)."""
        decoded = self._decode_fast(messages, csv=csv)
        if decoded is None:
            decoded = self._decode_each(messages, csv=csv)
        return decoded

    # -- the fast path --------------------------------------------------------------

    def _decode_fast(self, messages: Sequence[Message], *, csv: bool) -> DecodedEvents | None:
        """The whole batch in one typed decode, or None for the per-event path."""
        if self._fast is None:
            return None
        values = [m.value for m in messages]
        if max(map(len, values)) > self.max_event_bytes:
            return None
        if csv and any(name == CSV_ERROR_HEADER for m in messages for name, _ in m.headers):
            return None
        try:
            batch = self._fast[csv].decode(values)
            if batch is None:
                return None
            if batch.ids is None:
                ids = [m.position for m in messages]
            else:
                ids = batch.ids
                "".join(ids).encode()  # a lone surrogate cannot be a key or a header
            if batch.times is None:
                times: list[int | None] = [None] * len(messages)
            else:
                times = _times_ms(batch.times, text_numbers=csv)
        except Exception:  # anything one event can raise: the per-event path says which
            return None
        return DecodedEvents(
            candidates=list(range(len(messages))),
            ids=ids,
            times_ms=times,
            columns=batch.columns,
            coerce_strings=csv,
        )

    # -- the per-event path ---------------------------------------------------------

    def _decode_each(self, messages: Sequence[Message], *, csv: bool) -> DecodedEvents:
        decoded = DecodedEvents(
            candidates=[], ids=[], times_ms=[], columns=None, coerce_strings=csv
        )
        for i, message in enumerate(messages):
            try:
                self._decode_one(i, message, decoded, csv=csv)
            except Exception as exc:  # a last resort: no event may stop the worker
                decoded.failures.append(
                    (i, "decode", f"Undecodable event ({type(exc).__name__})", None)
                )
        return decoded

    def _decode_one(self, i: int, message: Message, into: DecodedEvents, *, csv: bool) -> None:
        size = len(message.value)
        if size > self.max_event_bytes:
            into.failures.append(
                (
                    i,
                    "decode",
                    f"Event of {size} bytes exceeds the limit of {self.max_event_bytes} "
                    "bytes (limits.max_event_bytes)",
                    None,
                )
            )
            return
        for name, value in message.headers:
            if name == CSV_ERROR_HEADER:
                problem = value.decode("utf-8", "replace")
                into.failures.append((i, "decode", f"Malformed row: {problem}", None))
                return
        try:
            record = orjson.loads(message.value)
        except orjson.JSONDecodeError as exc:
            record = _lenient_loads(message.value)
            if record is _UNDECODABLE:
                into.failures.append((i, "decode", f"Invalid JSON: {exc}", None))
                return
        id_field = self.id_field
        if id_field is None:
            event_id = message.position
        else:
            raw = record.get(id_field) if isinstance(record, dict) else None
            if not isinstance(raw, _ID_TYPES) or isinstance(raw, bool):
                problem = "Missing" if raw is None else "Expected `str` or `int` for"
                reason = f"{problem} id field `{id_field}` - at `$.{id_field}`"
                into.failures.append((i, "validate", reason, id_field))
                return
            event_id = str(raw)
            try:
                event_id.encode()
            except UnicodeEncodeError:
                into.failures.append(
                    (
                        i,
                        "validate",
                        f"Expected UTF-8 text for id field `{id_field}`, got a lone "
                        f"surrogate - at `$.{id_field}`",
                        id_field,
                    )
                )
                return
        time_field = self.time_field
        event_time = None
        if time_field is not None and isinstance(record, dict):
            try:
                event_time = event_time_ms(record.get(time_field), text_numbers=csv)
            except _BadTimeError:
                into.failures.append((i, "validate", _time_reason(time_field), time_field))
                return
        into.candidates.append(i)
        into.records.append(record)
        into.ids.append(event_id)
        into.times_ms.append(event_time)


_UNDECODABLE: Final = object()


def _lenient_loads(raw: bytes) -> Any:
    """The slow path for what orjson refuses: NaN/Infinity tokens (Python's json takes
    them, so the schema can reject the value with a precise reason) or nothing.

    Nesting deeper than orjson's limit raises `RecursionError` in Python's json: that is
    undecodable too, never an exception out of the worker.
    """
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return _UNDECODABLE


def subset_events(
    decoded: DecodedEvents, keep: Sequence[int], *, failures: list[Failure] | None = None
) -> DecodedEvents:
    """The events at `keep` (indices into the candidates) of `decoded`.

    The failures list is `decoded`'s own (shared, so failures found while scoring the
    subset are the batch's) unless `failures` gives the subset a list of its own.
    """
    columns = decoded.columns
    if columns is not None:
        index = np.asarray(keep, dtype=np.intp)
        columns = {name: column[index] for name, column in columns.items()}
    return DecodedEvents(
        candidates=[decoded.candidates[j] for j in keep],
        ids=[decoded.ids[j] for j in keep],
        times_ms=[decoded.times_ms[j] for j in keep],
        columns=columns,
        records=[decoded.records[j] for j in keep] if decoded.records else [],
        coerce_strings=decoded.coerce_strings,
        failures=decoded.failures if failures is None else failures,
    )
