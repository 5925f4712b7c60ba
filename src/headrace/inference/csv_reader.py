"""The CSV reader behind `iter_input_chunks`: streaming, all text, every row numbered.

pyarrow's streaming reader reads every column as text, so one bad value cannot break
type inference for a whole block; values are parsed per schema field by validation
(``coerce_strings``). A row with the wrong number of values is skipped by pyarrow and
rejected here at stage ``decode``, under its own data row number (the header is not a
row). Record batches follow bytes, not rows, so they are gathered into chunks of
``chunk_rows`` rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from headrace.errors import InputFileError
from headrace.inference.chunk import (
    InputChunk,
    _decode_rejection,
    _numbered_chunk,
    _select_names,
)
from headrace.inference.validate import Rejection
from headrace.types import Array

# Internal: `headrace.inference.readers.iter_input_chunks` is the way in.
__all__: list[str] = []

_CSV_BLOCK_BYTES: Final = 4 << 20


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
            rejections.append(_decode_rejection(bad.row, bad.reason))
        rows = self.next_row + np.arange(m, dtype=np.int64) + np.cumsum(before)[:m]
        self.next_row = end
        return rows, rejections


def _iter_csv(
    path: Path, *, chunk_rows: int, columns: Sequence[str] | None
) -> Iterator[InputChunk]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = _csv_header(path)
    wanted = _select_names(header, columns)
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
        return _numbered_chunk(head, head_rows, rejections, coerce_strings=True)
