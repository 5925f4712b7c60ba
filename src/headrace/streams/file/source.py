"""`FileSource`: one file read as a one-partition stream, with checkpoints and replay."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from headrace.errors import ConfigError, SourceError
from headrace.streams.base import Message, RevokeCallback
from headrace.streams.file.formats import (
    _GROUP,
    _SOURCE_FORMATS,
    _flag,
    _format_of,
    _fsync_directory,
    _offset_option,
    _path_of,
    checkpoint_path,
)
from headrace.streams.file.readers import _CsvReader, _JsonlReader, _ParquetReader, _Reader

__all__ = ["FileSource"]

_FOLLOW_INTERVAL = 0.05  # seconds between looks at a followed file's end


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
        Names the checkpoint that `commit` writes and `open` resumes from; letters,
        digits, ``.``, ``_``, ``-``. Without a group nothing is stored and every run reads
        the file from the start.
    options
        ``format`` (``jsonl``, ``csv``, ``parquet``; default from the extension),
        ``start`` (replay from this offset instead of the checkpoint), ``follow``
        (default false: wait for appended lines at the end instead of ending; JSONL and
        CSV), ``checkpoint_dir`` (where checkpoints go: a worker passes
        ``HEADRACE_HOME/checkpoints``; without it, ``<path>.<group>.offset`` beside the
        file), ``checkpoint`` (one checkpoint path, overriding both), ``delimiter`` (CSV;
        default ``,``, tab for ``.tsv``). A checkpoint beside the file from an earlier
        release is still resumed from while none exists in ``checkpoint_dir``.
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
        checkpoint_dir = opts.pop("checkpoint_dir", None)
        if opts:
            raise ConfigError(
                f"{where}: unknown options {sorted(opts)}; known ones are format, start, "
                "follow, checkpoint, checkpoint_dir, delimiter"
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
        # Read when `checkpoint` does not exist yet: the place earlier releases wrote to.
        self._legacy_checkpoint: Path | None = None
        if checkpoint is not None:
            self.checkpoint = Path(str(checkpoint)).expanduser()
        elif group is not None:
            directory = None if checkpoint_dir is None else Path(str(checkpoint_dir))
            if directory is not None:
                directory = directory.expanduser()
            self.checkpoint = checkpoint_path(self.path, group, directory=directory)
            if directory is not None:
                self._legacy_checkpoint = checkpoint_path(self.path, group)
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
        checkpoint = self.checkpoint
        if checkpoint is not None and not checkpoint.exists():
            checkpoint = self._legacy_checkpoint
        if checkpoint is None or not checkpoint.exists():
            return 0
        try:
            offset = orjson.loads(checkpoint.read_bytes())["offset"]
            if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0:
                return offset
            problem = f"offset {offset!r} is not a non-negative integer"
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            problem = str(exc) or type(exc).__name__
        raise SourceError(
            f"Checkpoint {checkpoint} of {self.path} is unreadable ({problem}): "
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
