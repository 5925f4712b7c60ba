"""What both sides of a file stream agree on: paths, formats, options, checkpoints."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from headrace.errors import ConfigError

__all__ = ["CONTENT_TYPE_HEADER", "CSV_CONTENT_TYPE", "CSV_ERROR_HEADER", "checkpoint_path"]

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


def checkpoint_path(path: Path, group: str, *, directory: Path | None = None) -> Path:
    """Where a file source commits for `group`.

    In `directory` (a worker's ``HEADRACE_HOME/checkpoints``), so nothing is written beside
    the user's data: ``<name>.<hash of the absolute path>.<group>.offset``, one per file
    and group. Without a directory, beside the file: ``<path>.<group>.offset`` (the place
    of earlier releases, still read when the one in `directory` does not exist yet).
    """
    if directory is None:
        return path.with_name(f"{path.name}.{group}.offset")
    digest = hashlib.sha256(str(path.absolute()).encode("utf-8", "surrogateescape"))
    return directory / f"{path.name}.{digest.hexdigest()[:16]}.{group}.offset"


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
