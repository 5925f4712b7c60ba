"""Batch-file output: `OutputWriter` writes predictions or rejects a chunk at a time.

``.jsonl`` / ``.ndjson`` lines are encoded with orjson; ``.csv`` and ``.parquet`` / ``.pq``
go through pyarrow's streaming writers, the schema fixed by the first chunk. A file takes
its final name only when closed, so a failed run leaves no half-written output behind.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from headrace.errors import ConfigError, HeadraceError

__all__ = ["OutputWriter"]

_OUTPUT_FORMATS: Final = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


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
