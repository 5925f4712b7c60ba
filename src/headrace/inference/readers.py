"""Batch-file input: `iter_input_chunks` reads a file to score in chunks, by extension.

- ``.csv``: pyarrow's streaming reader with every column read as text, so one bad value
  cannot break type inference for a whole block; values are parsed per schema field by
  validation (``coerce_strings``). A row with the wrong number of values is rejected at
  stage ``decode`` (see `headrace.inference.csv_reader`).
- ``.parquet`` / ``.pq``: `pyarrow.parquet.ParquetFile.iter_batches`, typed columns, nulls
  as masks (`columns_from_arrow`).
- ``.jsonl`` / ``.ndjson`` / ``.json``: one JSON object per line, decoded with orjson; a
  line that is not a JSON object is rejected at stage ``decode``. A ``.json`` file that
  holds one array of objects is read whole.

Row numbers are 0-based data rows: the CSV header is not a row; for JSON lines a row is
the 0-based line index (blank lines are skipped, not rows). Every row read is either in a
chunk's columns or among its rejections.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from headrace.errors import ConfigError, InputFileError
from headrace.inference.arrow import columns_from_arrow
from headrace.inference.chunk import (
    InputChunk,
    _decode_rejection,
    _numbered_chunk,
    _select_names,
)
from headrace.inference.csv_reader import _iter_csv
from headrace.inference.validate import Rejection, _json_type, records_to_columns

__all__ = ["iter_input_chunks"]

_INPUT_FORMATS: Final = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def _input_format(path: Path) -> str:
    fmt = _INPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputFileError(
            f"Cannot read '{path}': unknown extension '{path.suffix}'; "
            f"use one of {', '.join(_INPUT_FORMATS)}"
        )
    return fmt


def _check_input_file(path: Path) -> int:
    """Return the file's size, or raise InputFileError saying why it cannot be read."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise InputFileError(f"Input file '{path}' not found: check the path") from None
    except IsADirectoryError:
        raise InputFileError(
            f"Input file '{path}' is a directory: pass a .csv, .parquet or .jsonl file"
        ) from None
    except OSError as exc:
        raise InputFileError(
            f"Input file '{path}' cannot be read ({exc.strerror}): check its permissions"
        ) from None
    if size == 0:
        raise InputFileError(f"Input file '{path}' is empty: there is nothing to score")
    return size


def iter_input_chunks(
    path: Path, *, chunk_rows: int = 65536, columns: Sequence[str] | None = None
) -> Iterator[InputChunk]:
    """Read a batch file in chunks of at most `chunk_rows` rows.

    Parameters
    ----------
    path
        A ``.csv``, ``.parquet``/``.pq`` or ``.jsonl``/``.ndjson``/``.json`` file.
    chunk_rows
        The most rows per chunk.
    columns
        Only read these columns (usually the schema's field names); None reads all.

    Yields
    ------
    InputChunk
        Columns for `InferenceService.infer` plus the rows that failed to decode.

    Raises
    ------
    InputFileError
        For an unknown extension, a missing, unreadable or empty file, a file that is not
        of its format, or a CSV header naming a column twice.
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows is {chunk_rows}: use 1 or more")
    fmt = _input_format(path)
    _check_input_file(path)
    if fmt == "csv":
        yield from _iter_csv(path, chunk_rows=chunk_rows, columns=columns)
    elif fmt == "parquet":
        yield from _iter_parquet(path, chunk_rows=chunk_rows, columns=columns)
    else:
        yield from _iter_json(path, chunk_rows=chunk_rows, columns=columns)


# -- Parquet ----------------------------------------------------------------------------


def _iter_parquet(
    path: Path, *, chunk_rows: int, columns: Sequence[str] | None
) -> Iterator[InputChunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(
            f"Input file '{path}' is not a readable Parquet file ({exc}): check the file"
        ) from None
    names = parquet.schema_arrow.names
    wanted = _select_names(names, columns)
    read = wanted or names[:1]  # something to count rows with
    first = 0
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=read):
            cols = columns_from_arrow(batch, names=wanted)
            yield InputChunk(
                columns=cols, n_rows=batch.num_rows, first_row=first, coerce_strings=False
            )
            first += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(
            f"Cannot read Parquet file '{path}' after {first} rows: {exc}: check the file"
        ) from None


# -- JSON lines -------------------------------------------------------------------------


def _iter_json(
    path: Path, *, chunk_rows: int, columns: Sequence[str] | None
) -> Iterator[InputChunk]:
    with path.open("rb") as handle:
        start = handle.read(4096).lstrip()
        handle.seek(0)
        if path.suffix.lower() == ".json" and start.startswith(b"["):
            values = _json_array(path, handle.read())
            yield from _json_chunks(enumerate(values), chunk_rows=chunk_rows, columns=columns)
        else:
            yield from _json_chunks(_json_lines(handle), chunk_rows=chunk_rows, columns=columns)


def _json_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
    """(line index, decoded value) per non-blank line; a `Rejection` for invalid JSON."""
    for line_index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield line_index, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            reason = f"Invalid JSON: {exc.msg} at column {exc.colno}"
            yield line_index, _decode_rejection(line_index, reason)


def _json_array(path: Path, raw: bytes) -> list[Any]:
    """The values of a ``.json`` file holding one array, or InputFileError saying where not."""
    try:
        values: list[Any] = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputFileError(
            f"Invalid JSON in '{path}' at line {exc.lineno}, column {exc.colno}: {exc.msg}: "
            "fix the file, or write one JSON object per line (.jsonl)"
        ) from None
    return values


def _json_chunks(
    values: Iterable[tuple[int, Any]], *, chunk_rows: int, columns: Sequence[str] | None
) -> Iterator[InputChunk]:
    """Chunks of `chunk_rows` rows from (row, value) pairs: objects become records, any
    other value (or a `Rejection` already made) a rejection at stage ``decode``."""
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    rejections: list[Rejection] = []
    for row, value in values:
        if isinstance(value, dict):
            records.append(value)
            rows.append(row)
        elif isinstance(value, Rejection):
            rejections.append(value)
        else:
            reason = f"Expected `object`, got `{_json_type(value)}` - at `$`"
            rejections.append(_decode_rejection(row, reason))
        if len(records) + len(rejections) >= chunk_rows:
            yield _json_chunk(records, rows, rejections, columns)
            records, rows, rejections = [], [], []
    if records or rejections:
        yield _json_chunk(records, rows, rejections, columns)


def _json_chunk(
    records: list[dict[str, Any]],
    rows: list[int],
    rejections: list[Rejection],
    columns: Sequence[str] | None,
) -> InputChunk:
    if columns is None:
        names: dict[str, None] = {}
        for record in records:
            names.update(dict.fromkeys(record))
        columns = list(names)
    return _numbered_chunk(
        dict(records_to_columns(records, names=columns)),
        np.asarray(rows, dtype=np.int64),
        rejections,
        coerce_strings=False,
    )
