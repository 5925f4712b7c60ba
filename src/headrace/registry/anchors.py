"""Where audit checkpoints are kept: a directory or an S3 prefix, outside the database.

Each checkpoint is a new file or object (``checkpoint-<seq>-<time>.json``), never an
overwrite, so the newest one is the one whose name sorts last. Point the location at
storage the registry's database users cannot write (another account's bucket with
object lock, a write-once directory) for the anchor to mean anything.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import msgspec

from headrace.audit.checkpoint import Checkpoint
from headrace.errors import AuditError, ConfigError

__all__ = [
    "CHECKPOINTS_ENV",
    "CheckpointStore",
    "FileCheckpointStore",
    "S3CheckpointStore",
    "open_checkpoint_store",
]

CHECKPOINTS_ENV = "HEADRACE_AUDIT_CHECKPOINTS"
_MAX_BYTES = 64 * 1024
_PREFIX = "checkpoint-"


class CheckpointStore(Protocol):
    """Writes checkpoints and reads back the newest."""

    url: str

    def write(self, checkpoint: Checkpoint) -> str:
        """Store `checkpoint` as a new file or object; return where it went."""
        ...

    def latest(self) -> tuple[Checkpoint, str] | None:
        """The newest checkpoint and where it is, or None when there is none."""
        ...


def _decode(raw: bytes, where: str) -> Checkpoint:
    if len(raw) > _MAX_BYTES:
        raise AuditError(f"Checkpoint {where} is {len(raw)} bytes, too large to be one.")
    try:
        return msgspec.json.decode(raw, type=Checkpoint)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AuditError(f"Checkpoint {where} is not a headrace checkpoint: {exc}.") from exc


class FileCheckpointStore:
    """Checkpoints as files in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def write(self, checkpoint: Checkpoint) -> str:
        """Write to a temporary name, then link it in: never a torn or replaced file."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            target = self.root / checkpoint.name()
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(msgspec.json.encode(checkpoint))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.link(tmp, target)  # fails if the name exists: checkpoints are not replaced
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise AuditError(
                f"Cannot write checkpoint to '{self.root}': {exc.strerror}. Check the "
                f"directory is writable ({CHECKPOINTS_ENV} or --to)."
            ) from exc
        return str(target)

    def latest(self) -> tuple[Checkpoint, str] | None:
        """The file whose name sorts last."""
        if not self.root.is_dir():
            return None
        names = sorted(
            p.name for p in self.root.iterdir() if p.name.startswith(_PREFIX) and p.is_file()
        )
        if not names:
            return None
        path = self.root / names[-1]
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise AuditError(f"Cannot read checkpoint '{path}': {exc.strerror}.") from exc
        return _decode(raw, f"'{path}'"), str(path)


class S3CheckpointStore:
    """Checkpoints as objects under an S3 prefix (endpoint from HEADRACE_S3_ENDPOINT_URL)."""

    def __init__(self, bucket: str, *, prefix: str = "") -> None:
        from headrace.registry.s3 import ENDPOINT_ENV, _make_client

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client: Any = _make_client(os.environ.get(ENDPOINT_ENV) or None)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def write(self, checkpoint: Checkpoint) -> str:
        """Put a new object under a name no earlier checkpoint has (sequence and time)."""
        key = self._key(checkpoint.name())
        body = msgspec.json.encode(checkpoint)
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=body)
        except Exception as exc:
            raise AuditError(
                f"Cannot write checkpoint to '{self.url}': {type(exc).__name__}. Check the "
                "bucket exists and the credentials may write to it."
            ) from exc
        return f"s3://{self.bucket}/{key}"

    def latest(self) -> tuple[Checkpoint, str] | None:
        """The object whose key sorts last under the prefix."""
        keys: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(_PREFIX)):
                keys.extend(item["Key"] for item in page.get("Contents", []))
            if not keys:
                return None
            key = max(keys)
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            raw = response["Body"].read(_MAX_BYTES + 1)
        except Exception as exc:
            raise AuditError(
                f"Cannot read checkpoints from '{self.url}': {type(exc).__name__}. Check the "
                "bucket exists and the credentials may read it."
            ) from exc
        return _decode(raw, f"'s3://{self.bucket}/{key}'"), f"s3://{self.bucket}/{key}"


def open_checkpoint_store(url: str) -> CheckpointStore:
    """``file:///dir``, a plain directory path, or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        raw = url[len("file://") :] if url.startswith("file://") else url
        if not raw:
            raise ConfigError(f"Empty checkpoint location: set {CHECKPOINTS_ENV} or --to.")
        return FileCheckpointStore(Path(raw).expanduser().absolute())
    if parsed.scheme == "s3" and parsed.netloc:
        return S3CheckpointStore(parsed.netloc, prefix=parsed.path)
    raise ConfigError(
        f"Unsupported checkpoint location '{url[:200]}': use a directory, file:///dir or "
        f"s3://bucket/prefix ({CHECKPOINTS_ENV} or --to)."
    )
