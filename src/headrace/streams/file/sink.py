"""`FileSink`: outputs and dead letters appended to JSON lines, or written as Parquet."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import IO, Any

import orjson

from headrace.errors import ConfigError, SinkError
from headrace.streams.base import OutRecord
from headrace.streams.file.formats import (
    _SINK_FORMATS,
    _flag,
    _format_of,
    _fsync_directory,
    _path_of,
)

__all__ = ["FileSink"]


class FileSink:
    """Writes record values to a JSON-lines or Parquet file.

    JSONL: every value is one line, appended; `flush` writes and fsyncs, so a flushed
    record survives a crash. Values must not contain a newline (compact JSON never does).

    Parquet: values must be JSON objects; `flush` writes them as one row group (the
    first flush fixes the columns and their types) and fsyncs, but a Parquet file is
    readable only once `close` wrote its footer. The file is written as
    ``<path>.partial`` and renamed on `close`, so a crash leaves no half file at `path`;
    for outputs that must survive a crash as soon as they are acknowledged, use JSONL.

    Parameters
    ----------
    url
        ``file:///abs/out.jsonl``, ``file://relative/out.parquet``, or a path; a URL
        naming a directory takes the file name from `topic`. Missing directories are
        created.
    topic
        The file name inside a directory URL; unused when the URL names the file.
    options
        ``format`` (``jsonl`` or ``parquet``; default from the extension), ``fsync``
        (default true: `flush` waits for the disk), ``overwrite`` (Parquet; default
        false: an existing file is an error, as a Parquet file cannot be appended to).
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        topic: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = _path_of(url, topic=topic, role="FileSink")
        self.url = f"file://{self.path}"
        where = f"FileSink {self.url}"
        opts = dict(options or {})
        self.format = _format_of(
            self.path, opts.pop("format", None), role="FileSink", allowed=_SINK_FORMATS
        )
        self._fsync = _flag(opts.pop("fsync", True), name="fsync", where=where)
        self._overwrite = _flag(opts.pop("overwrite", False), name="overwrite", where=where)
        if opts:
            raise ConfigError(
                f"{where}: unknown options {sorted(opts)}; known ones are format, fsync, overwrite"
            )
        self._partial = self.path.with_name(f"{self.path.name}.partial")
        self._handle: IO[bytes] | None = None
        self._rows: list[dict[str, Any]] = []
        self._writer: Any = None  # pyarrow.parquet.ParquetWriter, made at the first flush
        self._schema: Any = None
        self._written = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"FileSink({self.url!r})"

    def open(self) -> None:
        """Create the directory and open the file (JSONL: for appending)."""
        if self._closed:
            raise SinkError(f"{self!r} was closed: make a new sink to write again")
        if self._handle is not None:
            return
        if self.format == "parquet" and self.path.exists() and not self._overwrite:
            raise ConfigError(
                f"{self!r}: {self.path} exists and a Parquet file cannot be appended to: "
                "remove it, choose another path, or set the option overwrite: true"
            )
        target = self._partial if self.format == "parquet" else self.path
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = target.open("ab" if self.format == "jsonl" else "wb")
        except OSError as exc:
            raise SinkError(f"File sink {target} cannot be opened for writing: {exc}") from exc

    def send(self, records: Sequence[OutRecord]) -> None:
        """Queue `records` (JSONL: into the file's buffer; Parquet: as rows).

        Raises
        ------
        SinkError
            A value cannot be written in this format (a newline in a JSONL value, a
            value that is not a JSON object for Parquet); nothing of this call is queued.
        """
        handle = self._require_open()
        if self.format == "jsonl":
            for index, record in enumerate(records):
                if b"\n" in record.value:
                    raise SinkError(
                        f"Record {index} of this batch for {self.path} contains a newline, "
                        "which would split it into two JSON lines: send single-line values "
                        "(compact JSON)"
                    )
            try:
                handle.write(b"".join(record.value + b"\n" for record in records))
            except OSError as exc:
                raise SinkError(f"Cannot write to {self.path}: {exc}") from exc
            return
        rows = []
        for index, record in enumerate(records):
            try:
                row = orjson.loads(record.value)
            except orjson.JSONDecodeError as exc:
                row, problem = None, f"is not JSON ({exc})"
            else:
                problem = f"is a JSON {type(row).__name__}, not an object"
            if not isinstance(row, dict):
                raise SinkError(
                    f"Record {index} of this batch for Parquet file {self.path} {problem}: "
                    "a Parquet sink writes JSON objects as rows"
                )
            rows.append(row)
        self._rows.extend(rows)

    def flush(self, *, timeout: float) -> None:
        """Write everything sent so far and fsync it (`timeout` is not enforced: a local
        write either completes or fails).

        Raises
        ------
        SinkError
            The write failed (disk full, permissions) or, for Parquet, a row does not
            fit the columns the first flush fixed.
        """
        handle = self._require_open()
        try:
            if self.format == "parquet":
                self._write_row_group(handle)
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        except OSError as exc:
            raise SinkError(
                f"Cannot write to {self.path}: {exc}. Free disk space or fix permissions; "
                "the batch was not acknowledged"
            ) from exc

    def _write_row_group(self, handle: IO[bytes]) -> None:
        if not self._rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self._rows = self._rows, []
        try:
            if self._schema is None:
                table = pa.Table.from_pylist(rows)
                self._schema = table.schema
                self._writer = pq.ParquetWriter(handle, self._schema)
            else:
                known = set(self._schema.names)
                for row in rows:
                    extra = set(row) - known
                    if extra:
                        raise SinkError(
                            f"Parquet file {self.path}: a row has columns {sorted(extra)} "
                            f"the file does not (its columns, fixed by the first flush, are "
                            f"{self._schema.names}); write such records to a JSONL sink"
                        )
                table = pa.Table.from_pylist(rows, schema=self._schema)
            self._writer.write_table(table)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise SinkError(
                f"Parquet file {self.path}: rows {self._written}..{self._written + len(rows)} "
                f"do not fit its columns {self._schema}: {exc}. Keep one type per field, or "
                "write to a JSONL sink"
            ) from exc
        self._written += len(rows)

    def close(self) -> None:
        """Flush what is pending (best effort) and finish the file; idempotent.

        Parquet: writes the footer and renames ``<path>.partial`` to `path` (a sink that
        never received a row leaves an empty table with no columns).
        """
        handle = self._handle
        if handle is None:
            self._closed = True
            return
        try:
            self.flush(timeout=0)
        finally:
            self._handle = None
            self._closed = True
            try:
                if self.format == "parquet":
                    self._finish_parquet(handle)
            finally:
                handle.close()

    def _finish_parquet(self, handle: IO[bytes]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(handle, pa.schema([]))
        self._writer.close()
        handle.flush()
        if self._fsync:
            os.fsync(handle.fileno())
        os.replace(self._partial, self.path)
        _fsync_directory(self.path.parent)

    def _require_open(self) -> IO[bytes]:
        if self._handle is None:
            state = "was closed" if self._closed else "is not open"
            raise SinkError(f"{self!r} {state}: call open() before send() or flush()")
        return self._handle
