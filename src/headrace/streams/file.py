"""Files as streams: replay recorded events in, write outputs and dead letters out.

`FileSource` reads one file as one partition (``Message.topic`` is the path, partition
0), in one of three formats chosen by the extension or the ``format`` option:

* JSON lines (``.jsonl``, ``.ndjson``): one message per line, the line's raw bytes as
  the value (without its line ending), whether or not they are valid JSON, so the
  pipeline can dead-letter a bad line with its original bytes. The offset is the 0-based
  line number; blank lines are skipped but keep their number.
* CSV (``.csv``, ``.tsv``): the first row names the columns; each further row becomes a
  JSON object of *strings* (``""`` for an empty cell), with the header
  ``content-type: csv`` (`CONTENT_TYPE_HEADER`, `CSV_CONTENT_TYPE`) so the pipeline
  parses each value per its schema field type (CSV has no types to guess from). A row
  whose cell count differs from the header's is passed through as its raw bytes with a
  `CSV_ERROR_HEADER` saying why, to be dead-lettered. The offset is the 0-based record
  number after the header.
* Parquet (``.parquet``, ``.pq``): each row becomes a JSON object (orjson; decimals as
  floats, binary as UTF-8 text or else base64); the offset is the row number.

`FileSource.commit` writes the next offset to a checkpoint, ``<path>.<group>.offset``
(atomically: temporary file, fsync, rename), so a restarted worker resumes after its
last commit; the ``start`` option replays from an offset instead. By default the end of
the file is the end of the stream: `poll` returns ``[]`` and `FileSource.exhausted`
turns true so a worker can stop; ``follow: true`` waits for appended lines instead
(JSONL and CSV), like ``tail -f``.

`FileSink` writes JSON lines (appended; `FileSink.flush` fsyncs) or Parquet (buffered;
each flush writes a row group; `FileSink.close` finalises the file). Files carry values
only: keys and headers are not written.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import os
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from headrace.errors import ConfigError, SinkError, SourceError
from headrace.streams.base import Message, OutRecord, RevokeCallback

__all__ = [
    "CONTENT_TYPE_HEADER",
    "CSV_CONTENT_TYPE",
    "CSV_ERROR_HEADER",
    "FileSink",
    "FileSource",
    "checkpoint_path",
]

CONTENT_TYPE_HEADER = "content-type"
"""Header a CSV row's message carries, with value `CSV_CONTENT_TYPE`."""

CSV_CONTENT_TYPE = b"csv"
"""Says the message is a JSON object of strings from a CSV row: parse values per field."""

CSV_ERROR_HEADER = "csv-error"
"""Header of a CSV row passed through raw because it is malformed; the value says why."""

Format = Literal["jsonl", "csv", "parquet"]

_FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SOURCE_FORMATS: tuple[Format, ...] = ("jsonl", "csv", "parquet")
_SINK_FORMATS: tuple[Format, ...] = ("jsonl", "parquet")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FOLLOW_INTERVAL = 0.05  # seconds between looks at a followed file's end
_PARQUET_BATCH = 1024


def _path_of(url: str | os.PathLike[str], *, topic: str | None, role: str) -> Path:
    """``file:///abs/path``, ``file://rel/path`` or a plain path; a directory + `topic`."""
    raw = os.fspath(url)
    if raw.startswith("file://"):
        raw = raw[len("file://") :]
    elif "://" in raw:
        raise ConfigError(
            f"{role} URL '{raw}' is not a file:// URL: use file:///abs/path.jsonl or a path"
        )
    if not raw:
        raise ConfigError(f"{role} URL '{url}' names no file: use file:///abs/path.jsonl")
    path = Path(raw).expanduser()
    if raw.endswith("/") or path.is_dir():
        if not topic:
            raise ConfigError(
                f"{role} URL '{url}' names a directory: give the file name as the topic "
                "or put it in the URL (file:///dir/events.jsonl)"
            )
        path = path / topic
    # Otherwise the URL names the file and `topic` is unused (a pipeline may pass one).
    return path


def _format_of(path: Path, option: Any, *, role: str, allowed: Sequence[Format]) -> Format:
    if option is not None:
        chosen = str(option).lower()
        if chosen not in allowed:
            raise ConfigError(
                f"{role} {path}: format={option!r} is not one of {', '.join(allowed)}"
            )
        return chosen  # type: ignore[return-value]  # checked against `allowed` above
    found = _FORMATS.get(path.suffix.lower())
    if found is None or found not in allowed:
        suffixes = sorted(s for s, f in _FORMATS.items() if f in allowed)
        raise ConfigError(
            f"{role} {path}: cannot tell the format from '{path.suffix or path.name}': use "
            f"one of {', '.join(suffixes)} or set the option format: {'|'.join(allowed)}"
        )
    return found


def _flag(value: Any, *, name: str, where: str) -> bool:
    """A boolean option, also from YAML/CLI strings (``"true"``, ``"0"``...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{where}: option {name}={value!r} is not a boolean (true or false)")


def _offset_option(value: Any, *, where: str) -> int | None:
    """The ``start`` option of a file: a line/row offset, ``earliest``, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "committed"):
            return None
        if text == "earliest":
            return 0
        if text.isdigit():
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(
        f"{where}: start={value!r} must be a line/row offset >= 0 or 'earliest' (a file "
        "has no time index: replay by time needs a broker source)"
    )


def checkpoint_path(path: Path, group: str) -> Path:
    """Where a file source commits for `group`: ``<path>.<group>.offset``."""
    return path.with_name(f"{path.name}.{group}.offset")


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


class FileSource:
    """A JSONL, CSV or Parquet file read as a one-partition stream.

    Parameters
    ----------
    url
        ``file:///abs/path.jsonl``, ``file://relative/path.csv``, or a path. A URL
        naming a directory takes the file name from `topic`.
    topic
        The file name inside a directory URL; unused when the URL names the file.
    group
        Names the checkpoint (``<path>.<group>.offset``) that `commit` writes and `open`
        resumes from; letters, digits, ``.``, ``_``, ``-``. Without a group nothing is
        stored and every run reads the file from the start.
    options
        ``format`` (``jsonl``, ``csv``, ``parquet``; default from the extension),
        ``start`` (replay from this offset instead of the checkpoint), ``follow``
        (default false: wait for appended lines at the end instead of ending; JSONL and
        CSV), ``checkpoint`` (another checkpoint path, e.g. when the data directory is
        read-only), ``delimiter`` (CSV; default ``,``, tab for ``.tsv``).
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        topic: str | None = None,
        group: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = _path_of(url, topic=topic, role="FileSource")
        self.topic = str(self.path)
        self.url = f"file://{self.path}"
        where = f"FileSource {self.url}"
        opts = dict(options or {})
        self.format = _format_of(
            self.path, opts.pop("format", None), role="FileSource", allowed=_SOURCE_FORMATS
        )
        self._start = _offset_option(opts.pop("start", None), where=where)
        self.follow = _flag(opts.pop("follow", False), name="follow", where=where)
        default_delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        self._delimiter = str(opts.pop("delimiter", default_delimiter))
        checkpoint = opts.pop("checkpoint", None)
        if opts:
            raise ConfigError(
                f"{where}: unknown options {sorted(opts)}; known ones are format, start, "
                "follow, checkpoint, delimiter"
            )
        if self.follow and self.format == "parquet":
            raise ConfigError(
                f"{where}: follow is not possible for Parquet (a file is complete only "
                "once written); use JSONL or CSV to follow a growing file"
            )
        if len(self._delimiter) != 1:
            raise ConfigError(f"{where}: delimiter={self._delimiter!r} must be one character")
        if group is not None and not _GROUP.fullmatch(group):
            raise ConfigError(
                f"{where}: group '{group}' cannot name a checkpoint file: use letters, "
                "digits, '.', '_' and '-'"
            )
        self.group = group
        self.checkpoint: Path | None
        if checkpoint is not None:
            self.checkpoint = Path(str(checkpoint)).expanduser()
        elif group is not None:
            self.checkpoint = checkpoint_path(self.path, group)
        else:
            self.checkpoint = None
        self._reader: _Reader | None = None
        self._committed = 0
        self._paused = False
        self._closed = False

    def __repr__(self) -> str:
        return f"FileSource({self.url!r}, group={self.group!r})"

    @property
    def exhausted(self) -> bool:
        """True once a `poll` reached the end of the file (never when following)."""
        return self._reader is not None and self._reader.ended and not self.follow

    @property
    def committed(self) -> int:
        """The offset a restart would resume from (the checkpoint, as of this source)."""
        return self._committed

    def open(self, *, on_revoke: RevokeCallback | None = None) -> None:
        """Open the file at the checkpoint (or `start`); `on_revoke` is never called."""
        if self._closed:
            raise SourceError(f"{self!r} was closed: make a new source to read again")
        if self._reader is not None:
            return
        if not self.path.is_file():
            raise SourceError(
                f"File source {self.path} does not exist or is not a file: check the path "
                "(file:///abs/path or file://relative/path, relative to the working "
                f"directory {Path.cwd()})"
            )
        self._committed = self._read_checkpoint()
        start = self._committed if self._start is None else self._start
        self._committed = start
        if self.format == "parquet":
            self._reader = _ParquetReader(self.path, topic=self.topic, start=start)
            return
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise SourceError(f"File source {self.path} cannot be opened: {exc}") from exc
        if self.format == "jsonl":
            self._reader = _JsonlReader(handle, topic=self.topic, start=start, follow=self.follow)
        else:
            self._reader = _CsvReader(
                handle,
                topic=self.topic,
                start=start,
                follow=self.follow,
                delimiter=self._delimiter,
            )

    def _read_checkpoint(self) -> int:
        if self.checkpoint is None or not self.checkpoint.exists():
            return 0
        try:
            offset = orjson.loads(self.checkpoint.read_bytes())["offset"]
            if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0:
                return offset
            problem = f"offset {offset!r} is not a non-negative integer"
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            problem = str(exc) or type(exc).__name__
        raise SourceError(
            f"Checkpoint {self.checkpoint} of {self.path} is unreadable ({problem}): "
            "delete it to start from the beginning, or set the option start to an offset"
        )

    def poll(self, *, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages` records; ``[]`` at once at the end unless following."""
        reader = self._require_open()
        deadline = time.monotonic() + timeout
        while True:
            if self._paused:
                time.sleep(max(0.0, deadline - time.monotonic()))
                return []
            batch = reader.read(max_messages)
            if batch or not self.follow:
                return batch
            reader.ended = False  # following: the end is only where the writer is now
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            time.sleep(min(left, _FOLLOW_INTERVAL))

    def commit(self, messages: Sequence[Message]) -> None:
        """Write the offset after the last of `messages` to the checkpoint, durably."""
        if not messages:
            return
        self._require_open()
        offsets = []
        for message in messages:
            if message.topic != self.topic or not isinstance(message.offset, int):
                raise SourceError(
                    f"Cannot commit {message.position} with {self!r}: it reads "
                    f"{self.topic} (commit each message with the source it came from)"
                )
            offsets.append(message.offset)
        offset = max(offsets) + 1
        if offset <= self._committed:
            return
        if self.checkpoint is not None:
            self._write_checkpoint(self.checkpoint, offset)
        self._committed = offset

    def _write_checkpoint(self, target: Path, offset: int) -> None:
        temporary = target.with_name(f"{target.name}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as out:
                out.write(orjson.dumps({"offset": offset, "file": str(self.path)}) + b"\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
            _fsync_directory(target.parent)
        except OSError as exc:
            raise SourceError(
                f"Cannot write checkpoint {target} for {self.topic}[0]@{offset - 1}: {exc}. "
                "Check the directory is writable, or set the option checkpoint to a "
                "writable path"
            ) from exc

    def pause(self) -> None:
        """Stop reading: `poll` waits out its timeout and returns ``[]``."""
        self._paused = True

    def resume(self) -> None:
        """Read again after `pause`."""
        self._paused = False

    def close(self) -> None:
        """Close the file (commits nothing); idempotent."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._closed = True

    def _require_open(self) -> _Reader:
        if self._reader is None:
            state = "was closed" if self._closed else "is not open"
            raise SourceError(f"{self!r} {state}: call open() before poll() or commit()")
        return self._reader


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename still happened
    finally:
        os.close(fd)


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
