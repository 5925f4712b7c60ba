"""Artifact stores: content-addressed blobs behind one small contract.

A blob is stored under its sha256 (``sha256/ab/abcdef...``), so writing is idempotent and
a crash mid-upload can only leave an unreferenced blob behind, never a half release.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlparse

from headrace._redact import redact_url
from headrace.errors import (
    ArtifactNotFoundError,
    ArtifactUnavailableError,
    ConfigError,
)

__all__ = ["ArtifactStore", "LocalArtifactStore", "blob_key", "open_artifact_store"]


def blob_key(sha256: str) -> str:
    """The store-relative key of a blob: ``sha256/<first two hex>/<hex>``."""
    return f"sha256/{sha256[:2]}/{sha256}"


@runtime_checkable
class ArtifactStore(Protocol):
    """Where release files live, addressed by their sha256.

    The store does not verify content: the registry hashes every file it fetches against
    the manifest, so a store only has to move bytes.
    """

    url: str

    def put_file(self, source: Path, sha256: str) -> None:
        """Store `source` as the blob `sha256`; a blob already present is left as is."""
        ...

    def has(self, sha256: str) -> bool:
        """Whether the blob exists."""
        ...

    def get_file(self, sha256: str, dest: Path) -> None:
        """Copy the blob to `dest`; raise `ArtifactNotFoundError` when it is missing."""
        ...

    def check(self) -> None:
        """Raise `ArtifactUnavailableError` (saying what to do) when the store is unusable."""
        ...


class LocalArtifactStore:
    """Blobs in a local directory (the default, ``file://./.headrace/artifacts``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def _path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def put_file(self, source: Path, sha256: str) -> None:
        """Copy to a temporary name in the same directory, then rename: never a torn blob."""
        target = self._path(sha256)
        if target.exists():
            return
        tmp: str | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            os.close(fd)
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            tmp = None
        except OSError as exc:
            if tmp is not None:  # a failed copy must not leave a partial file behind
                Path(tmp).unlink(missing_ok=True)
            raise ArtifactUnavailableError(
                f"Cannot write to artifact store '{self.url}': {exc}. "
                "Check the directory exists and is writable, or set HEADRACE_ARTIFACTS."
            ) from exc

    def has(self, sha256: str) -> bool:
        """Whether the blob file exists."""
        return self._path(sha256).is_file()

    def get_file(self, sha256: str, dest: Path) -> None:
        """Copy the blob file to `dest`."""
        source = self._path(sha256)
        if not source.is_file():
            raise ArtifactNotFoundError(
                f"Blob {sha256} is missing from artifact store '{self.url}' "
                f"(expected at {source}). Restore it or re-register the release."
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)

    def check(self) -> None:
        """The root must be a writable directory (created if absent)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".headrace-write-check"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ArtifactUnavailableError(
                f"Artifact store '{self.url}' is not writable: {exc}. "
                "Fix the permissions or point HEADRACE_ARTIFACTS elsewhere."
            ) from exc


def open_artifact_store(url: str) -> ArtifactStore:
    """Open the store a URL names: ``file:///abs/path``, ``file://rel/path`` or ``s3://bucket/prefix``.

    S3 options (endpoint, region, credentials) come from the standard AWS environment
    variables plus ``HEADRACE_S3_ENDPOINT_URL`` for S3-compatible servers.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        raw = url[len("file://") :] if url.startswith("file://") else url
        return LocalArtifactStore(Path(raw).expanduser().absolute())
    if parsed.scheme == "s3":
        from headrace.registry.s3 import S3ArtifactStore

        return S3ArtifactStore.from_url(url)
    raise ConfigError(
        f"Unsupported artifact store URL '{redact_url(url)}': use file:///path or "
        "s3://bucket/prefix "
        "(set HEADRACE_ARTIFACTS or --artifacts)."
    )
