"""Payload samples: a share of events, as the model saw them, kept for people to look at.

Debugging a live model starts with "show me some inputs and what it said". A
`PayloadSampler` keeps a random share (`ratio`) of the scored events and *every* errored
one, each with its schema fields, prediction, score, release and (for errors) the reason
and stage, and writes them to a `SampleSink`: Parquet files by default
(`ParquetSampleSink`), rolled by size and age so each file is closed and readable soon.

Every schema field marked ``pii`` is masked before the row enters the buffer (so no
personal value is ever held for writing, let alone written): hashed with a keyed hash
(HMAC-SHA256, so equal values still group together but cannot be guessed back from a
dictionary without the key) or redacted. Only schema fields are kept: an unknown key in an
event could be personal data nobody declared, so it never reaches a sample.

The worker only appends masked rows to a bounded buffer; a writer thread drains it. When
the sink falls behind and the buffer is full, rows are dropped and counted (`dropped`):
monitoring must never slow scoring down.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from headrace.errors import ConfigError
from headrace.release.schema import Field, Schema

__all__ = [
    "REDACTED",
    "PayloadSampler",
    "ParquetSampleSink",
    "PiiMasker",
    "PiiMode",
    "SampleSink",
    "sample_arrow_schema",
]

log = logging.getLogger("headrace.monitoring")

PiiMode = Literal["hash", "redact"]
"""How a ``pii`` field is masked: a keyed hash (``hmac-sha256:<hex>``) or `REDACTED`."""

REDACTED = "<redacted>"
"""What a redacted ``pii`` value becomes (the same text as in rejection reasons)."""

_ARROW_TYPES = {
    "float": "float64",
    "int": "int64",
    "bool": "bool",
    "string": "string",
    "category": "string",
    "timestamp": "string",
}


class PiiMasker:
    """Masks the ``pii`` fields of event rows.

    Parameters
    ----------
    schema
        The release schema; its ``pii`` fields are masked.
    mode
        ``hash`` (keyed HMAC-SHA256, truncated to 128 bits) or ``redact``.
    key
        The hash key (``hash`` only); keep it secret, or hashes of guessable values
        (emails, phone numbers) could be reversed by trying candidates.
    """

    def __init__(self, schema: Schema, *, mode: PiiMode, key: bytes | None = None) -> None:
        if mode not in ("hash", "redact"):
            raise ConfigError(f"pii mode {mode!r} is not 'hash' or 'redact': pick one of them")
        if mode == "hash" and not key:
            raise ConfigError(
                "pii mode 'hash' needs a secret key: set one (e.g. from `openssl rand -hex 32`) "
                "or use pii: redact"
            )
        self.mode = mode
        self.fields = frozenset(f.name for f in schema.fields if f.pii)
        self._key = key or b""

    def mask_value(self, value: Any) -> str | None:
        """The masked form of one ``pii`` value (None stays None)."""
        if value is None:
            return None
        if self.mode == "redact":
            return REDACTED
        text = value if isinstance(value, str) else repr(value)
        digest = hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return "hmac-sha256:" + digest.hexdigest()[:32]

    def mask(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `row` with every ``pii`` field masked."""
        return {
            name: self.mask_value(value) if name in self.fields else value
            for name, value in row.items()
        }

    def scrub(self, text: str, row: Mapping[str, Any]) -> str:
        """`text` with any ``pii`` value of `row` in it replaced by its masked form.

        For free text that may quote an event (a model's exception message): validation
        reasons never show ``pii`` values, but a model's own message is its author's.
        """
        for name in self.fields:
            value = _plain(row.get(name))
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                shown = value if isinstance(value, str) else repr(value)
                if len(shown) >= 3 and shown in text:
                    text = text.replace(shown, self.mask_value(value) or REDACTED)
        return text


class SampleSink(Protocol):
    """Where sampled rows go. Called from the sampler's writer thread only."""

    def write(self, table: Any) -> None:
        """Store a ``pyarrow.Table`` of masked rows (the schema of `sample_arrow_schema`);
        may buffer, but must not lose them on `close`."""
        ...

    def tick(self) -> None:
        """Called about once a second: a chance to roll a file by age."""
        ...

    def close(self) -> None:
        """Finish what is open so it can be read."""
        ...


class ParquetSampleSink:
    """Parquet files in a directory, rolled by size and by age.

    A file is written as ``samples-<UTC time>-<pid>-<n>.parquet.tmp`` and renamed to
    ``.parquet`` when it is rolled or closed, so a reader listing ``*.parquet`` only ever
    sees complete files.

    Parameters
    ----------
    directory
        Created if missing.
    schema
        The release schema: the ``features`` struct column has one typed field per
        schema field (``pii`` ones as text, since they hold masks).
    roll_bytes
        Start a new file once the open one has this many bytes.
    roll_s
        Start a new file once the open one is this old.
    """

    def __init__(
        self,
        directory: Path,
        *,
        schema: Schema,
        roll_bytes: int = 64 << 20,
        roll_s: float = 300.0,
    ) -> None:
        self.directory = directory
        self.roll_bytes = roll_bytes
        self.roll_s = roll_s
        self.files: list[Path] = []
        self._schema = sample_arrow_schema(schema)
        self._writer: Any = None
        self._path: Path | None = None
        self._opened = 0.0
        self._sequence = 0

    def write(self, table: Any) -> None:
        """Append a table of rows to the open file (opening one first); roll it if full."""
        if table.num_rows == 0:
            return
        import pyarrow.parquet as pq

        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._sequence += 1
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            name = f"samples-{stamp}-{os.getpid()}-{self._sequence}.parquet.tmp"
            self._path = self.directory / name
            self._writer = pq.ParquetWriter(self._path, self._schema, compression="zstd")
            self._opened = time.monotonic()
        self._writer.write_table(table)
        if self._path is not None and self._path.stat().st_size >= self.roll_bytes:
            self._finish()

    def tick(self) -> None:
        """Roll the open file when it is older than `roll_s`."""
        if self._writer is not None and time.monotonic() - self._opened >= self.roll_s:
            self._finish()

    def close(self) -> None:
        """Close the open file and give it its final name."""
        self._finish()

    def _finish(self) -> None:
        if self._writer is None or self._path is None:
            return
        self._writer.close()
        final = self._path.with_suffix("")  # drop ".tmp"
        self._path.rename(final)
        self.files.append(final)
        self._writer = None
        self._path = None


def sample_arrow_schema(schema: Schema) -> Any:
    """The Arrow schema of sample rows for a release schema."""
    import pyarrow as pa

    features = pa.struct(
        [
            pa.field(f.name, pa.string() if f.pii else pa.type_for_alias(_ARROW_TYPES[f.type]))
            for f in schema.fields
        ]
    )
    return pa.schema(
        [
            pa.field("event_id", pa.string()),
            pa.field("release", pa.string()),
            pa.field("at_ms", pa.int64()),
            pa.field("source", pa.string()),
            pa.field("outcome", pa.string()),
            pa.field("prediction", pa.string()),
            pa.field("score", pa.float64()),
            pa.field("stage", pa.string()),
            pa.field("error", pa.string()),
            pa.field("features", features),
            pa.field("invalid_fields", pa.list_(pa.string())),
        ]
    )


class PayloadSampler:
    """Chooses, masks and buffers sample rows; a writer thread hands them to a sink.

    Parameters
    ----------
    schema
        The release schema (fields kept, types, ``pii`` marks).
    sink
        Where rows go (`ParquetSampleSink`).
    ratio
        The share of scored events kept, in [0, 1]; errored events are always kept.
    masker
        How ``pii`` fields are masked.
    max_buffer
        Rows waiting for the writer at most; beyond, rows are dropped and counted.
    flush_s
        How often the writer thread drains the buffer.
    seed
        For the random choice (tests).
    """

    def __init__(
        self,
        schema: Schema,
        *,
        sink: SampleSink,
        ratio: float,
        masker: PiiMasker,
        max_buffer: int = 10_000,
        flush_s: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= ratio <= 1.0 or math.isnan(ratio):
            raise ConfigError(f"sample ratio {ratio!r} is not within [0, 1]")
        if max_buffer < 1:
            raise ConfigError(f"max_buffer {max_buffer} must be at least 1")
        self.schema = schema
        self.sink = sink
        self.ratio = ratio
        self.masker = masker
        self.max_buffer = max_buffer
        self.flush_s = flush_s
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._names = [f.name for f in schema.fields]
        self._checked = [f for f in schema.fields if not f.pii]
        self._arrow_schema = sample_arrow_schema(schema)
        self._rng = np.random.default_rng(seed)
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def choose(self, n: int) -> list[int]:
        """Indices of the rows (of `n`) to keep, a `ratio` share at random, sorted."""
        if n <= 0 or self.ratio <= 0.0:
            return []
        if self.ratio >= 1.0:
            return list(range(n))
        k = int(self._rng.binomial(n, self.ratio))
        if k == 0:
            return []
        return sorted(self._rng.choice(n, size=k, replace=False).tolist())

    def add(
        self,
        *,
        event_id: str | None,
        release: str,
        at_ms: int,
        source: str,
        features: Mapping[str, Any] | None,
        prediction: Any = None,
        score: float | None = None,
        stage: str | None = None,
        error: str | None = None,
    ) -> None:
        """Mask and buffer one row (an errored one when `error` is given).

        `features` holds the event's values by field name (absent names are nulls);
        None when the event could not be decoded. A value that does not fit its field's
        type is stored as null and its field named in ``invalid_fields`` (by the writer:
        the scoring thread only selects and masks).
        """
        masker = self.masker
        selected: dict[str, Any] | None = None
        if features is not None:
            get = features.get
            selected = {name: get(name) for name in self._names}
            for name in masker.fields:
                selected[name] = masker.mask_value(_plain(selected[name]))
            if error is not None:
                error = masker.scrub(error, features)
        row: dict[str, Any] = {
            "event_id": event_id,
            "release": release,
            "at_ms": at_ms,
            "source": source,
            "outcome": "dead_letter" if error is not None else "output",
            "prediction": None if prediction is None else str(prediction),
            "score": None if score is None or math.isnan(score) else float(score),
            "stage": stage,
            "error": error,
            "features": selected,
            "invalid_fields": [],
        }
        with self._lock:
            if len(self._buffer) >= self.max_buffer:
                self.dropped += 1
                return
            self._buffer.append(row)

    # -- the writer thread -----------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="headrace-samples", daemon=True)
        self._thread.start()

    def flush(self) -> None:
        """Hand every buffered row to the sink now (from the calling thread)."""
        with self._lock:
            rows, self._buffer = self._buffer, []
        if not rows:
            return
        try:
            self.sink.write(self._table(rows))
        except Exception as exc:
            # Samples are for people, not for the pipeline: losing some must not stop
            # scoring. Say so once per failure with the reason, never the rows.
            self.failed += len(rows)
            log.warning(
                "payload samples: %d rows not written to %s: %s: %s",
                len(rows),
                type(self.sink).__name__,
                type(exc).__name__,
                exc,
            )
        else:
            self.written += len(rows)

    def _table(self, rows: list[dict[str, Any]]) -> Any:
        """The Arrow table of `rows`. Scored rows passed validation, so their values fit
        and Arrow converts them in one call; errored rows (and a batch Arrow refuses) are
        fitted value by value, misfits nulled and named."""
        import pyarrow as pa

        for row in rows:
            if row["outcome"] != "output":
                self._fit_row(row)
        try:
            return pa.Table.from_pylist(rows, schema=self._arrow_schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            for row in rows:
                if row["outcome"] == "output":
                    self._fit_row(row)
            return pa.Table.from_pylist(rows, schema=self._arrow_schema)

    def _fit_row(self, row: dict[str, Any]) -> None:
        features = row["features"]
        if features is None:
            return
        invalid = row["invalid_fields"] = []
        for field in self._checked:
            fitted = _fit(field, features[field.name])
            if fitted is _MISFIT:
                features[field.name] = None
                invalid.append(field.name)
            else:
                features[field.name] = fitted

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()
            try:
                self.sink.tick()
            except Exception as exc:
                log.warning("payload samples: rolling failed: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        """Stop the writer, write what is left and close the sink."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        self.sink.close()


_MISFIT = object()


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value; anything not JSON-like (a sentinel) as None."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return None


def _fit(field: Field, value: Any) -> Any:
    """`value` as the field's Arrow type, None for a null, `_MISFIT` when it is not one."""
    value = _plain(value)
    if value is None:
        return None
    kind = field.type
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return _MISFIT
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value if -(1 << 63) <= value < (1 << 63) else _MISFIT
        if isinstance(value, float) and value.is_integer() and abs(value) < 2.0**63:
            return int(value)
        return _MISFIT
    if kind == "bool":
        return value if isinstance(value, bool) else _MISFIT
    if kind == "timestamp":
        return value if isinstance(value, str) else repr(value)
    return value if isinstance(value, str) else _MISFIT
