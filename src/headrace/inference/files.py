"""Batch files: reading a file to score in chunks, writing predictions and rejects.

Inputs are read streaming, one chunk of rows at a time, by extension:

- ``.csv``: pyarrow's streaming reader with every column read as text, so one bad value
  cannot break type inference for a whole block; values are parsed per schema field by
  validation (``coerce_strings``). A row with the wrong number of values is rejected at
  stage ``decode``.
- ``.parquet`` / ``.pq``: `pyarrow.parquet.ParquetFile.iter_batches`, typed columns, nulls
  as masks.
- ``.jsonl`` / ``.ndjson`` / ``.json``: one JSON object per line, decoded with orjson; a
  line that is not a JSON object is rejected at stage ``decode``. A ``.json`` file that
  holds one array of objects is read whole.

Row numbers are 0-based data rows: the CSV header is not a row; for JSON lines a row is
the 0-based line index (blank lines are skipped, not rows). Every row read ends up either
in the output or in the rejects: `score_file` checks predicted + rejected == rows read.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from headrace.errors import ConfigError, HeadraceError, InputFileError
from headrace.inference.service import InferenceService
from headrace.inference.validate import Rejection, _json_type, records_to_columns
from headrace.release.schema import Schema
from headrace.types import Array

__all__ = [
    "BatchSummary",
    "InputChunk",
    "OutputWriter",
    "columns_from_arrow",
    "iter_input_chunks",
    "score_file",
]

_INPUT_FORMATS: Final = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_OUTPUT_FORMATS: Final = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_CSV_BLOCK_BYTES: Final = 4 << 20
_SAMPLE_BYTES: Final = 1 << 20
REJECT_COLUMNS: Final = ("row", "stage", "field", "reason")


@dataclass(frozen=True, slots=True)
class InputChunk:
    """A chunk of rows read from a batch file.

    Attributes
    ----------
    columns
        Field name -> column of `n_rows` values, ready for `InferenceService.infer`.
    n_rows
        The number of rows in `columns`.
    first_row
        The file row number of the chunk's first row (decoded or not).
    coerce_strings
        True when every value is text (CSV): pass it on to `infer`.
    row_numbers
        The file row number of each row of `columns`, when they are not simply
        ``first_row, first_row + 1, ...`` (rows that failed to decode leave gaps).
    rejections
        Rows of this chunk that could not be decoded (stage ``decode``), with file row
        numbers; they are not in `columns`.
    """

    columns: dict[str, Array]
    n_rows: int
    first_row: int
    coerce_strings: bool
    row_numbers: npt.NDArray[np.int64] | None = None
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def n_read(self) -> int:
        """Rows read from the file for this chunk: decoded plus rejected at decode."""
        return self.n_rows + len(self.rejections)

    def file_rows(self, positions: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Map row positions within `columns` to file row numbers."""
        idx = np.asarray(positions, dtype=np.int64)
        if self.row_numbers is None:
            return idx + self.first_row
        return self.row_numbers[idx]


class BatchSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What `score_file` did.

    Parameters
    ----------
    rows
        Data rows read from the input (``predicted + rejected``).
    predicted
        Rows written to the output.
    rejected
        Rows written to the rejects (or only counted, without a rejects file).
    seconds
        Wall time.
    output_path, rejects_path
        Where predictions and rejects went.
    rejected_by_stage
        Rejected rows per stage (``decode``, ``validate``, ``predict``).
    first_rejections
        The first few rejections, to show without opening the rejects file.
    """

    rows: int
    predicted: int
    rejected: int
    seconds: float
    output_path: str
    rejects_path: str | None
    rejected_by_stage: dict[str, int]
    first_rejections: list[Rejection]

    @property
    def rows_per_second(self) -> float:
        """Throughput over the whole run."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


# -- input ------------------------------------------------------------------------------


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


# -- CSV --------------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str]:
    """The column names on the header line."""
    try:
        # errors="replace": only the header is decoded here (bad bytes further on are
        # pyarrow's to report, with their position)
        with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
    except csv.Error as exc:
        raise InputFileError(f"CSV file '{path}' has a malformed header: {exc}") from None
    if header and any("\ufffd" in name for name in header):
        raise InputFileError(f"CSV file '{path}' is not UTF-8 text: re-save it as UTF-8")
    if not header or not any(name.strip() for name in header):
        raise InputFileError(
            f"CSV file '{path}' has no header line: the first line must name the columns"
        )
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputFileError(
                f"CSV header of '{path}' names column '{name}' twice: give every column a "
                "distinct name"
            )
        seen.add(name)
    return header


@dataclass(slots=True)
class _BadCsvRow:
    row: int  # 0-based data row
    reason: str


class _CsvRowNumbers:
    """Gives data row numbers to the rows pyarrow parsed and to those it skipped.

    pyarrow reports a skipped (malformed) row by its 1-based record number, the header
    being record 1 (a record, not a physical line: quoted newlines do not count); good rows
    come without a number. Good rows fill, in order, the row numbers the skipped ones
    leave free.
    """

    def __init__(self) -> None:
        self.next_row = 0
        self.pending: list[_BadCsvRow] = []

    def place(
        self, m: int, *, final: bool = False
    ) -> tuple[npt.NDArray[np.int64], list[Rejection]]:
        """Number the next `m` good rows and the skipped rows among them."""
        self.pending.sort(key=lambda bad: bad.row)
        # the row each good row would have if no skipped row came in between
        slots = self.next_row + np.arange(m, dtype=np.int64)
        end = self.next_row + m
        before = np.zeros(m + 1, dtype=np.int64)
        rejections: list[Rejection] = []
        while self.pending and (final or self.pending[0].row < end):
            bad = self.pending.pop(0)
            k = int(np.searchsorted(slots, bad.row))  # good rows before it
            slots[k:] += 1
            end += 1
            before[k] += 1
            rejections.append(Rejection(row=bad.row, field=None, reason=bad.reason, stage="decode"))
        rows = self.next_row + np.arange(m, dtype=np.int64) + np.cumsum(before)[:m]
        self.next_row = end
        return rows, rejections


def _iter_csv(
    path: Path, *, chunk_rows: int, columns: Sequence[str] | None
) -> Iterator[InputChunk]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = _csv_header(path)
    wanted = header if columns is None else [n for n in header if n in set(columns)]
    numbers = _CsvRowNumbers()

    def on_invalid_row(row: Any) -> str:
        if row.number is None:  # cannot place it: stop rather than misnumber rows
            return "error"
        numbers.pending.append(
            _BadCsvRow(
                row=int(row.number) - 2,
                reason=f"Expected {row.expected_columns} columns, got {row.actual_columns}",
            )
        )
        return "skip"

    def fail(exc: Exception, rows: int) -> InputFileError:
        return InputFileError(
            f"Cannot read CSV file '{path}' after {rows} rows: {exc}: fix the file"
        )

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=_CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(
                invalid_row_handler=on_invalid_row, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                include_columns=wanted or header[:1],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise fail(exc, 0) from None

    buffer = _Rechunker(chunk_rows)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError) as exc:
            raise fail(exc, numbers.next_row) from None
        rows, rejections = numbers.place(batch.num_rows)
        cols = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in wanted}
        yield from buffer.add(cols, rows, rejections)
    _, rejections = numbers.place(0, final=True)
    yield from buffer.add({}, None, rejections)
    yield from buffer.flush()


class _Rechunker:
    """Gathers CSV record batches (whose size follows bytes, not rows) into chunks."""

    def __init__(self, chunk_rows: int) -> None:
        self.chunk_rows = chunk_rows
        self.columns: list[dict[str, Array]] = []
        self.rows: list[npt.NDArray[np.int64]] = []
        self.rejections: list[Rejection] = []
        self.count = 0

    def add(
        self,
        columns: dict[str, Array],
        rows: npt.NDArray[np.int64] | None,
        rejections: list[Rejection],
    ) -> Iterator[InputChunk]:
        if rows is not None and len(rows):
            self.columns.append(columns)
            self.rows.append(rows)
            self.count += len(rows)
        self.rejections.extend(rejections)
        while self.count >= self.chunk_rows:
            yield self._emit(self.chunk_rows)

    def flush(self) -> Iterator[InputChunk]:
        if self.count or self.rejections:
            yield self._emit(self.count)

    def _emit(self, n: int) -> InputChunk:
        names = list(self.columns[0]) if self.columns else []
        rows = np.concatenate(self.rows) if self.rows else np.empty(0, dtype=np.int64)
        columns = {name: np.concatenate([c[name] for c in self.columns]) for name in names}
        head_rows, rest_rows = rows[:n], rows[n:]
        head = {name: col[:n] for name, col in columns.items()}
        self.columns = [{name: col[n:] for name, col in columns.items()}] if len(rest_rows) else []
        self.rows = [rest_rows] if len(rest_rows) else []
        self.count = len(rest_rows)
        rejections, self.rejections = self.rejections, []
        first = min([*head_rows[:1].tolist(), *(r.row for r in rejections)], default=0)
        return InputChunk(
            columns=head,
            n_rows=n,
            first_row=first,
            coerce_strings=True,
            row_numbers=head_rows,
            rejections=rejections,
        )


# -- Parquet ----------------------------------------------------------------------------


def _arrow_to_numpy(array: Any) -> Array:
    """One Arrow column as numpy: typed where possible, nulls as a mask (NaT for times)."""
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if types.is_decimal(array.type):
        array = array.cast(pa.float64())
    kind = array.type
    if types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind):
        if array.null_count == 0:
            values: Array = array.to_numpy(zero_copy_only=False)
            return values
        mask = array.is_null().to_numpy(zero_copy_only=False)
        filled = array.fill_null(False if types.is_boolean(kind) else 0)
        return np.ma.MaskedArray(filled.to_numpy(zero_copy_only=False), mask=mask)
    if (
        types.is_timestamp(kind)
        or types.is_date(kind)
        or types.is_string(kind)
        or types.is_large_string(kind)
    ):
        converted: Array = array.to_numpy(zero_copy_only=False)
        return converted
    values_list = array.to_pylist()
    return np.fromiter(values_list, dtype=object, count=len(values_list))


def columns_from_arrow(data: Any, *, names: Sequence[str] | None = None) -> dict[str, Array]:
    """Columns for `InferenceService.infer` from a pyarrow Table or RecordBatch.

    Numbers and booleans stay typed (nulls as a `numpy.ma.MaskedArray` mask, so a null
    int is not mistaken for a NaN float), timestamps become datetime64 (NaT for null),
    strings and dictionary values become object arrays (None for null).

    Parameters
    ----------
    data
        A `pyarrow.Table` or `pyarrow.RecordBatch`.
    names
        Only these columns (those present); None converts every column.
    """
    present = data.schema.names
    wanted = present if names is None else [n for n in present if n in set(names)]
    out: dict[str, Array] = {}
    for name in wanted:
        column = data.column(name)
        if hasattr(column, "combine_chunks"):
            column = column.combine_chunks()
        out[name] = _arrow_to_numpy(column)
    return out


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
    wanted = names if columns is None else [n for n in names if n in set(columns)]
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
    first = min([*rows[:1], *(r.row for r in rejections)], default=0)
    return InputChunk(
        columns=dict(records_to_columns(records, names=columns)),
        n_rows=len(records),
        first_row=first,
        coerce_strings=False,
        row_numbers=np.asarray(rows, dtype=np.int64),
        rejections=rejections,
    )


def _decode_rejection(row: int, value: Any) -> Rejection:
    return Rejection(
        row=row,
        field=None,
        reason=f"Expected `object`, got `{_json_type(value)}` - at `$`",
        stage="decode",
    )


def _iter_json(
    path: Path, *, chunk_rows: int, columns: Sequence[str] | None
) -> Iterator[InputChunk]:
    with path.open("rb") as handle:
        start = handle.read(4096).lstrip()
        handle.seek(0)
        if path.suffix.lower() == ".json" and start.startswith(b"["):
            yield from _iter_json_array(path, handle.read(), chunk_rows=chunk_rows, columns=columns)
            return
        records: list[dict[str, Any]] = []
        rows: list[int] = []
        rejections: list[Rejection] = []
        for line_index, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                rejections.append(
                    Rejection(
                        row=line_index,
                        field=None,
                        reason=f"Invalid JSON: {exc.msg} at column {exc.colno}",
                        stage="decode",
                    )
                )
                continue
            if isinstance(value, dict):
                records.append(value)
                rows.append(line_index)
            else:
                rejections.append(_decode_rejection(line_index, value))
            if len(records) + len(rejections) >= chunk_rows:
                yield _json_chunk(records, rows, rejections, columns)
                records, rows, rejections = [], [], []
        if records or rejections:
            yield _json_chunk(records, rows, rejections, columns)


def _iter_json_array(
    path: Path, raw: bytes, *, chunk_rows: int, columns: Sequence[str] | None
) -> Iterator[InputChunk]:
    try:
        values = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputFileError(
            f"Invalid JSON in '{path}' at line {exc.lineno}, column {exc.colno}: {exc.msg}: "
            "fix the file, or write one JSON object per line (.jsonl)"
        ) from None
    for start in range(0, len(values), chunk_rows):
        records: list[dict[str, Any]] = []
        rows: list[int] = []
        rejections: list[Rejection] = []
        for i, value in enumerate(values[start : start + chunk_rows], start=start):
            if isinstance(value, dict):
                records.append(value)
                rows.append(i)
            else:
                rejections.append(_decode_rejection(i, value))
        yield _json_chunk(records, rows, rejections, columns)


# -- output -----------------------------------------------------------------------------


def _output_format(path: Path, *, what: str) -> str:
    fmt = _OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"Cannot write {what} to '{path}': unknown extension '{path.suffix}'; "
            f"use one of {', '.join(_OUTPUT_FORMATS)}"
        )
    return fmt


def _to_arrow(values: Any) -> Any:
    import pyarrow as pa

    array = np.asarray(values)
    if array.dtype.kind != "O":
        return pa.array(array)
    converted = pa.array(array.tolist())
    # an all-null chunk (say, no rejection names a field) must not fix the column as null
    return converted.cast(pa.string()) if pa.types.is_null(converted.type) else converted


class OutputWriter:
    """Writes rows to a ``.jsonl``/``.ndjson``, ``.csv`` or ``.parquet``/``.pq`` file, a chunk
    at a time.

    The rows go to ``<path>.partial`` and the file takes its name only on `close`, so a
    failed run leaves no half-written output behind. A file closed without any row still
    gets written: empty (JSON lines), the header (CSV) or an empty table (Parquet).

    Parameters
    ----------
    path
        Where to write; the extension picks the format.
    columns
        The column names, in order; every `write` passes exactly these.
    what
        What the file holds, for error messages (``predictions``, ``rejects``).

    Raises
    ------
    ConfigError
        For an unknown extension or a file that cannot be created.
    """

    def __init__(self, path: Path, *, columns: Sequence[str], what: str = "rows") -> None:
        self.path = path
        self.columns = list(columns)
        self.format = _output_format(path, what=what)
        self._partial = path.with_name(path.name + ".partial")
        self._file: io.BufferedWriter | None = None
        self._writer: Any = None
        self._schema: Any = None
        self._done = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if self.format == "jsonl":
                self._file = self._partial.open("wb")
        except OSError as exc:
            raise ConfigError(
                f"Cannot write {what} to '{path}' ({exc.strerror}): check that the directory "
                "is writable"
            ) from None

    def write(self, columns: Mapping[str, Any]) -> None:
        """Append rows: `columns` maps every column name to an array of one length."""
        if self._done:
            raise HeadraceError(f"OutputWriter for '{self.path}' is closed")
        values = [np.asarray(columns[name]) for name in self.columns]
        if not values or len(values[0]) == 0:
            return
        if self._file is not None:
            lists = [v.tolist() for v in values]
            names = self.columns
            self._file.write(
                b"".join(
                    orjson.dumps(
                        dict(zip(names, row, strict=True)), option=orjson.OPT_APPEND_NEWLINE
                    )
                    for row in zip(*lists, strict=True)
                )
            )
            return
        import pyarrow as pa

        table = pa.table({name: _to_arrow(v) for name, v in zip(self.columns, values, strict=True)})
        self._write_table(table)

    def _write_table(self, table: Any) -> None:
        if self._writer is None:
            self._schema = table.schema
            if self.format == "csv":
                import pyarrow.csv as pacsv

                self._writer = pacsv.CSVWriter(str(self._partial), self._schema)
            else:
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(str(self._partial), self._schema)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def close(self) -> None:
        """Finish the file and give it its final name."""
        if self._done:
            return
        if self._file is not None:
            self._file.close()
        else:
            if self._writer is None:
                import pyarrow as pa

                empty = pa.table({name: pa.array([], pa.string()) for name in self.columns})
                self._write_table(empty)
            self._writer.close()
        self._done = True
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        """Drop what was written; the final file is not created."""
        if self._done:
            return
        self._done = True
        try:
            if self._file is not None:
                self._file.close()
            elif self._writer is not None:
                self._writer.close()
        finally:
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# -- scoring a file ---------------------------------------------------------------------


def _estimate_rows(path: Path, fmt: str, size: int) -> int | None:
    """The exact row count for Parquet, an estimate from a sample's lines for text."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            rows: int = pq.ParquetFile(path).metadata.num_rows
        except Exception:  # the reader will say what is wrong
            return None
        return rows
    with path.open("rb") as handle:
        sample = handle.read(_SAMPLE_BYTES)
    if not sample:
        return None
    lines = sample.count(b"\n") + (0 if sample.endswith(b"\n") else 1)
    if size > len(sample):
        lines = round(lines * size / len(sample))
    return max(lines - (1 if fmt == "csv" else 0), 0)


def _require_columns(schema: Schema, chunk: InputChunk, path: Path) -> None:
    missing = [f.name for f in schema.fields if f.required and f.name not in chunk.columns]
    if missing:
        raise InputFileError(
            f"Input file '{path}' has no column {', '.join(repr(m) for m in missing)}, required "
            f"by the schema: add it (the schema's fields are {', '.join(schema.names)})"
        )


def score_file(
    service: InferenceService,
    *,
    input_path: Path,
    output_path: Path,
    rejects_path: Path | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    chunk_rows: int = 65536,
) -> BatchSummary:
    """Score a batch file through `service`, writing predictions and rejects.

    Output rows are ``row`` (the input's 0-based data row), ``prediction``, ``score``
    (only when the model gives scores), ``release`` and ``release_digest``. Reject rows are
    ``row``, ``stage``, ``field`` and ``reason``. Both files appear only once the whole
    input was scored.

    Parameters
    ----------
    service
        The release's inference service.
    input_path
        The ``.csv``, ``.parquet`` or ``.jsonl`` file to score.
    output_path
        Where predictions go (``.jsonl``, ``.csv`` or ``.parquet``).
    rejects_path
        Where rejected rows go; None only counts them (see `BatchSummary`).
    progress
        Called after each chunk with the rows done so far and the total (exact for
        Parquet, estimated for text files), and once at the end with both equal.
    chunk_rows
        The most rows scored per model call.

    Returns
    -------
    BatchSummary
        The counts and timing; ``predicted + rejected == rows``.

    Raises
    ------
    InputFileError
        When the input cannot be read, or lacks a column the schema requires.
    ConfigError
        When an output path has an unknown extension, is not writable, or is the input.
    ModelError
        When the model breaks its contract (rows that make it raise are rejected instead).
    """
    started = time.perf_counter()
    fmt = _input_format(input_path)
    _output_format(output_path, what="predictions")
    if rejects_path is not None:
        _output_format(rejects_path, what="rejects")
    for target in (output_path, rejects_path):
        if target is not None and target.resolve() == input_path.resolve():
            raise ConfigError(
                f"Output '{target}' is the input file: choose another path so the input is kept"
            )
    if rejects_path is not None and rejects_path.resolve() == output_path.resolve():
        raise ConfigError(f"Predictions and rejects both go to '{output_path}': use two paths")
    size = _check_input_file(input_path)
    total = _estimate_rows(input_path, fmt, size)

    schema = service.schema
    rejects = (
        OutputWriter(rejects_path, columns=REJECT_COLUMNS, what="rejects")
        if rejects_path is not None
        else None
    )
    predictions: OutputWriter | None = None
    read = predicted = rejected = 0
    by_stage: dict[str, int] = {}
    first_rejections: list[Rejection] = []
    checked = False
    try:
        for chunk in iter_input_chunks(input_path, chunk_rows=chunk_rows, columns=schema.names):
            if not checked and chunk.n_rows:
                _require_columns(schema, chunk, input_path)
                checked = True
            result = service.infer(
                chunk.columns, n_rows=chunk.n_rows, coerce_strings=chunk.coerce_strings
            )
            if result.n_predicted:
                if predictions is None:
                    names = ["row", "prediction"]
                    names += ["score"] if result.scores is not None else []
                    names += ["release", "release_digest"]
                    predictions = OutputWriter(output_path, columns=names, what="predictions")
                n = result.n_predicted
                out: dict[str, Any] = {
                    "row": chunk.file_rows(result.rows),
                    "prediction": result.predictions,
                    "release": np.full(n, result.release, dtype=object),
                    "release_digest": np.full(n, result.release_digest, dtype=object),
                }
                if "score" in predictions.columns:
                    out["score"] = (
                        result.scores if result.scores is not None else np.full(n, np.nan)
                    )
                predictions.write(out)
            chunk_rejections = list(chunk.rejections)
            if result.rejections:
                mapped = chunk.file_rows([r.row for r in result.rejections]).tolist()
                chunk_rejections.extend(
                    msgspec.structs.replace(r, row=row)
                    for r, row in zip(result.rejections, mapped, strict=True)
                )
                chunk_rejections.sort(key=lambda r: r.row)
            if chunk_rejections:
                for r in chunk_rejections:
                    by_stage[r.stage] = by_stage.get(r.stage, 0) + 1
                first_rejections.extend(chunk_rejections[: 10 - len(first_rejections)])
                if rejects is not None:
                    rejects.write(
                        {
                            "row": np.asarray([r.row for r in chunk_rejections], dtype=np.int64),
                            "stage": np.asarray([r.stage for r in chunk_rejections], dtype=object),
                            "field": np.asarray([r.field for r in chunk_rejections], dtype=object),
                            "reason": np.asarray(
                                [r.reason for r in chunk_rejections], dtype=object
                            ),
                        }
                    )
            read += chunk.n_read
            predicted += result.n_predicted
            rejected += len(chunk_rejections)
            if progress is not None:
                progress(read, None if total is None else max(total, read))
        if predictions is None:
            predictions = OutputWriter(
                output_path,
                columns=["row", "prediction", "release", "release_digest"],
                what="predictions",
            )
        predictions.close()
        if rejects is not None:
            rejects.close()
    except BaseException:
        for writer in (predictions, rejects):
            if writer is not None:
                writer.abort()
        raise
    if progress is not None:
        progress(read, read)
    return BatchSummary(
        rows=read,
        predicted=predicted,
        rejected=rejected,
        seconds=time.perf_counter() - started,
        output_path=str(output_path),
        rejects_path=None if rejects_path is None else str(rejects_path),
        rejected_by_stage=by_stage,
        first_rejections=first_rejections,
    )
