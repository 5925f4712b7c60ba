"""`probe_file`: can a source read its file (and write its checkpoint), a sink write its?

Looks at paths and permissions only: nothing is opened for writing, created or read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from headrace.errors import ConfigError
from headrace.streams.file.sink import FileSink
from headrace.streams.file.source import FileSource
from headrace.streams.probe import ProbeResult, Role, describe_endpoint

__all__ = ["probe_file"]


def probe_file(
    url: str,
    *,
    role: Role,
    topic: str | None = None,
    group: str | None = None,
    options: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> ProbeResult:
    """Check the file a ``file://`` source would read, or a sink would write.

    Parameters
    ----------
    url, topic, group, options
        As for `FileSource` / `FileSink` (the options are checked as they check them).
    role
        ``"source"``: the file must be a readable file, and the checkpoint's directory
        writable; ``"sink"``: the file writable, or its directory creatable.
    timeout
        Unused: local paths answer at once.
    """
    endpoint = describe_endpoint(url, topic)
    try:
        if role == "source":
            source = FileSource(url, topic=topic, group=group, options=options)
            return _readable(source)
        return _writable(FileSink(url, topic=topic, options=options))
    except ConfigError as exc:
        return ProbeResult(endpoint=endpoint, ok=False, detail=str(exc))


def _readable(source: FileSource) -> ProbeResult:
    path = source.path
    if not path.is_file():
        return ProbeResult(
            endpoint=source.url,
            ok=False,
            detail=f"{path} does not exist or is not a file: check the path (relative paths "
            f"start at the working directory, {Path.cwd()})",
        )
    if not os.access(path, os.R_OK):
        return ProbeResult(
            endpoint=source.url,
            ok=False,
            detail=f"{path} is not readable by this user: fix its permissions",
        )
    detail = f"{source.format}, {path.stat().st_size:,} bytes, readable"
    checkpoint = source.checkpoint
    if checkpoint is None:
        return ProbeResult(endpoint=source.url, ok=True, detail=f"{detail}; no checkpoint")
    problem = _not_writable(checkpoint)
    if problem is not None:
        return ProbeResult(
            endpoint=source.url,
            ok=False,
            detail=f"{detail}, but its checkpoint {checkpoint} cannot be written ({problem}): "
            "fix the permissions, or set the option checkpoint to a writable path",
        )
    state = "exists" if checkpoint.exists() else "not written yet"
    return ProbeResult(
        endpoint=source.url, ok=True, detail=f"{detail}; checkpoint {checkpoint} {state}"
    )


def _writable(sink: FileSink) -> ProbeResult:
    path = sink.path
    exists = path.exists()
    if sink.format == "parquet" and exists and not sink._overwrite:
        return ProbeResult(
            endpoint=sink.url,
            ok=False,
            detail=f"{path} exists and a Parquet file cannot be appended to: remove it, "
            "choose another path, or set the option overwrite: true",
        )
    problem = _not_writable(path)
    if problem is not None:
        return ProbeResult(
            endpoint=sink.url,
            ok=False,
            detail=f"{path} cannot be written ({problem}): fix the permissions or the path",
        )
    state = f"exists ({path.stat().st_size:,} bytes)" if exists else "will be created"
    return ProbeResult(endpoint=sink.url, ok=True, detail=f"{sink.format}, writable, {state}")


def _not_writable(path: Path) -> str | None:
    """Why `path` could not be written (or created with its directories), else None."""
    if path.exists():
        if path.is_dir():
            return "it is a directory"
        return None if os.access(path, os.W_OK) else "no write permission"
    parent = path.parent
    while not parent.exists():  # the nearest existing directory would hold the new ones
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"no permission to create files in {parent}"
    return None
