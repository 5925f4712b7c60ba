"""Reading JSONL, CSV and Parquet files as `Message`s, from an offset, batch by batch."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from headrace.errors import SourceError
from headrace.streams.base import Message
from headrace.streams.file.formats import CONTENT_TYPE_HEADER, CSV_CONTENT_TYPE, CSV_ERROR_HEADER

__all__ = []

_PARQUET_BATCH = 1024


def _json_default(value: Any) -> Any:
    """Parquet values orjson does not know, as the nearest JSON."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class _Lines:
    """Complete lines of a binary file, from where the last read stopped."""

    def __init__(self, handle: IO[bytes], *, follow: bool) -> None:
        self._handle = handle
        self._follow = follow

    def next(self) -> bytes | None:
        """The next line with its ending, or None at the end (or mid-line when following)."""
        if not self._follow:
            return self._handle.readline() or None
        at = self._handle.tell()
        line = self._handle.readline()
        if line and not line.endswith(b"\n"):
            # A writer is half-way through this line: come back for the rest of it.
            self._handle.seek(at)
            return None
        return line or None


class _Reader:
    """Reads one format; `read` returns up to `limit` messages (fewer at the end)."""

    ended = False

    def read(self, limit: int) -> list[Message]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""


class _JsonlReader(_Reader):
    def __init__(self, handle: IO[bytes], *, topic: str, start: int, follow: bool) -> None:
        self._handle = handle
        self._lines = _Lines(handle, follow=follow)
        self._topic = topic
        self._number = 0
        self._start = start

    def read(self, limit: int) -> list[Message]:
        batch: list[Message] = []
        while self._number < self._start:
            if self._lines.next() is None:
                self.ended = True
                return batch
            self._number += 1
        while len(batch) < limit:
            line = self._lines.next()
            if line is None:
                self.ended = True
                break
            number = self._number
            self._number += 1
            if number == 0 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # a UTF-8 byte order mark is not part of the first event
            value = line.rstrip(b"\r\n")
            if value.strip():
                batch.append(Message(value=value, topic=self._topic, offset=number))
        return batch

    def close(self) -> None:
        self._handle.close()


class _CsvReader(_Reader):
    def __init__(
        self, handle: IO[bytes], *, topic: str, start: int, follow: bool, delimiter: str
    ) -> None:
        self._handle = handle
        self._lines = _Lines(handle, follow=follow)
        self._topic = topic
        self._delimiter = delimiter
        self._raw: list[bytes] = []
        self._number = 0  # records after the header
        self._header: list[str] | None = None
        self._start = start

    def _text(self) -> Iterator[str]:
        while (line := self._lines.next()) is not None:
            self._raw.append(line)
            # surrogateescape keeps undecodable bytes so the raw row can be passed on.
            yield line.decode("utf-8", "surrogateescape")

    def _rows(self) -> Iterator[list[str]]:
        # A fresh csv.reader per read: a finished generator cannot see appended lines.
        yield from csv.reader(self._text(), delimiter=self._delimiter)

    def _read_header(self, rows: Iterator[list[str]]) -> bool:
        row = next(rows, None)
        if row is None:
            return False
        self._raw.clear()
        if row and row[0].startswith("\ufeff"):
            row[0] = row[0][1:]
        names = [name.strip() for name in row]
        if not names:
            raise SourceError(
                f"CSV file {self._topic}: the first row is empty; it must name every column"
            )
        for index, name in enumerate(names):
            if not name:
                raise SourceError(
                    f"CSV file {self._topic}: column {index + 1} of the header row has no "
                    "name; the first row must name every column"
                )
            if names.index(name) != index:
                raise SourceError(
                    f"CSV file {self._topic}: column '{name}' appears twice in the header "
                    "row; rename one of them"
                )
        self._header = names
        return True

    def read(self, limit: int) -> list[Message]:
        rows = self._rows()
        batch: list[Message] = []
        try:
            if self._header is None and not self._read_header(rows):
                self.ended = True
                return batch
            while self._number < self._start:
                if next(rows, None) is None:
                    self.ended = True
                    return batch
                self._raw.clear()
                self._number += 1
            while len(batch) < limit:
                row = next(rows, None)
                if row is None:
                    self.ended = True
                    break
                message = self._message(row, b"".join(self._raw).rstrip(b"\r\n"))
                self._raw.clear()
                self._number += 1
                if message is not None:
                    batch.append(message)
        except csv.Error as exc:
            raise SourceError(
                f"CSV file {self._topic} is malformed at {self._topic}[0]@{self._number}: "
                f"{exc}. Fix or remove that row, or replay from a later offset (start)"
            ) from exc
        return batch

    def _message(self, row: list[str], raw: bytes) -> Message | None:
        header = self._header or []
        if not row:
            return None  # a blank line
        problem = None
        if len(row) != len(header):
            problem = f"row has {len(row)} cells, the header has {len(header)}"
        else:
            try:
                value = orjson.dumps(dict(zip(header, row, strict=True)))
            except orjson.JSONEncodeError:
                problem = "row is not valid UTF-8"
        if problem is not None:
            return Message(
                value=raw,
                topic=self._topic,
                offset=self._number,
                headers=[(CSV_ERROR_HEADER, problem.encode())],
            )
        return Message(
            value=value,
            topic=self._topic,
            offset=self._number,
            headers=[(CONTENT_TYPE_HEADER, CSV_CONTENT_TYPE)],
        )

    def close(self) -> None:
        self._handle.close()


class _ParquetReader(_Reader):
    def __init__(self, path: Path, *, topic: str, start: int) -> None:
        import pyarrow.parquet as pq

        self._topic = topic
        try:
            self._file = pq.ParquetFile(path)
            sizes = [
                self._file.metadata.row_group(i).num_rows
                for i in range(self._file.metadata.num_row_groups)
            ]
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... for bad files
            raise SourceError(
                f"Parquet file {path} cannot be read: {exc}. Check it is a complete Parquet "
                "file (one still being written has no footer yet)"
            ) from exc
        first_group, before = 0, 0
        while first_group < len(sizes) and before + sizes[first_group] <= start:
            before += sizes[first_group]
            first_group += 1
        self._number = before
        self._skip = start - before
        self._batches = self._file.iter_batches(
            batch_size=_PARQUET_BATCH, row_groups=range(first_group, len(sizes))
        )
        self._rows: deque[dict[str, Any]] = deque()

    def read(self, limit: int) -> list[Message]:
        batch: list[Message] = []
        while len(batch) < limit:
            if not self._rows and not self._fill():
                self.ended = True
                break
            row = self._rows.popleft()
            value = orjson.dumps(row, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
            batch.append(Message(value=value, topic=self._topic, offset=self._number))
            self._number += 1
        return batch

    def _fill(self) -> bool:
        try:
            while not self._rows:
                record_batch = next(self._batches, None)
                if record_batch is None:
                    return False
                rows = record_batch.to_pylist()
                skip = min(self._skip, len(rows))
                self._skip -= skip
                self._number += skip
                self._rows.extend(rows[skip:])
        except Exception as exc:  # corrupt pages surface only while decoding
            raise SourceError(
                f"Parquet file {self._topic} is corrupt at {self._topic}[0]@{self._number}: "
                f"{exc}. Re-export the file, or replay from a later row (start)"
            ) from exc
        return True

    def close(self) -> None:
        self._file.close()
