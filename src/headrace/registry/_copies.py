"""Private, verified copies of release files: what was hashed is what gets loaded.

Hashing a cached file and then handing its path to a loader leaves a gap: whoever can
write to the cache can swap the file after the check and have a pickle of their own
unpickled. So every file is read once, through one open descriptor, hashed as it is
copied into a directory only this process can reach (``mkdtemp``: mode 0700, under the
system temporary directory whose sticky bit stops other users renaming it), and the
copy is refused unless its bytes hash to the manifest's sha256. Loaders only ever see
that directory; the shared cache is never reopened after a check.

The copies live for the process (a model may import or map its files lazily) and are
removed at exit, or when the registry is asked to forget a release.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath

from headrace.errors import ArtifactIntegrityError, RegistryIntegrityError
from headrace.registry.artifacts import ArtifactStore
from headrace.release.bundle import file_sha256
from headrace.release.manifest import FileEntry

__all__ = ["COPIES", "PrivateCopies", "copy_verified", "forget", "materialize"]

_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def copy_verified(source: Path, dest: Path, *, sha256: str, label: str, where: str) -> None:
    """Copy `source` to a new file `dest`, hashing the bytes copied; refuse a mismatch.

    `dest` is created exclusively (``O_EXCL``, no symlink followed) and left read-only.
    The bytes checked are the bytes written: `source` is opened once and never reread.

    Raises
    ------
    ArtifactIntegrityError
        The copied bytes do not hash to `sha256` (`dest` is removed).
    """
    digest = hashlib.sha256()
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        with source.open("rb") as reader, os.fdopen(out, "wb", closefd=False) as writer:
            for block in iter(lambda: reader.read(_CHUNK), b""):
                digest.update(block)
                writer.write(block)
            writer.flush()
        os.fchmod(out, 0o400)
    finally:
        os.close(out)
    actual = digest.hexdigest()
    if actual != sha256:
        dest.unlink(missing_ok=True)
        raise ArtifactIntegrityError(path=label, expected=sha256, actual=actual, where=where)


class PrivateCopies:
    """Per-process directories of verified release files, one per release digest.

    Keyed by process id too: a forked child neither reuses nor, at its exit, removes
    the copies its parent made.
    """

    def __init__(self) -> None:
        self._dirs: dict[tuple[int, str], Path] = {}
        self._lock = threading.Lock()
        atexit.register(self.clear)

    def get(self, digest: str) -> Path | None:
        """The verified directory of release `digest`, if this process made one."""
        with self._lock:
            found = self._dirs.get((os.getpid(), digest))
        return found if found is not None and found.is_dir() else None

    def new_dir(self, digest: str) -> Path:
        """A fresh, empty directory only this process can reach (mode 0700)."""
        return Path(tempfile.mkdtemp(prefix=f"headrace-release-{digest[:12]}-"))

    def keep(self, digest: str, directory: Path) -> Path:
        """Remember `directory` as the copy of `digest` (first one wins under a race)."""
        key = (os.getpid(), digest)
        with self._lock:
            current = self._dirs.get(key)
            if current is not None and current.is_dir():
                shutil.rmtree(directory, ignore_errors=True)
                return current
            self._dirs[key] = directory
            return directory

    def forget(self, digest: str) -> None:
        """Remove this process's copy of `digest`."""
        with self._lock:
            directory = self._dirs.pop((os.getpid(), digest), None)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def clear(self) -> None:
        """Remove every copy this process made (at exit)."""
        pid = os.getpid()
        with self._lock:
            mine = [key for key in self._dirs if key[0] == pid]
            dirs = [self._dirs.pop(key) for key in mine]
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)


COPIES = PrivateCopies()
"""This process's verified copies, shared by every `Registry` (keyed by release digest)."""


def materialize(
    files: list[FileEntry], *, digest: str, ref: str, cache_dir: Path, artifacts: ArtifactStore
) -> Path:
    """The private, verified directory of release `digest`'s `files` (made once per process).

    Each file is downloaded into the shared cache when absent (hashed before it lands),
    then copied from there into the private directory by `copy_verified`.
    """
    found = COPIES.get(digest)
    if found is not None:
        return found
    shared = cache_dir / digest
    private = COPIES.new_dir(digest)
    try:
        for entry in files:
            relative = _safe_relative(entry.path)
            cached = shared / relative
            if not cached.is_file():
                _download(entry, cached, artifacts)
            copy = private / relative
            make_private_parent(copy, private)
            copy_verified(
                cached,
                copy,
                sha256=entry.sha256,
                label=entry.path,
                where=f"release {ref} (store '{artifacts.url}', copy {cached})",
            )
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    return COPIES.keep(digest, private)


def _download(entry: FileEntry, target: Path, artifacts: ArtifactStore) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".fetch-")
    os.close(fd)
    try:
        artifacts.get_file(entry.sha256, Path(tmp))
        actual = file_sha256(Path(tmp))
        if actual != entry.sha256:
            raise ArtifactIntegrityError(
                path=entry.path,
                expected=entry.sha256,
                actual=actual,
                where=f"artifact store '{artifacts.url}'",
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_private_parent(path: Path, root: Path) -> None:
    """Create the directories between `root` and `path` with mode 0700."""
    parent = path.parent
    if parent != root:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def _safe_relative(path: str) -> Path:
    """A manifest path as a relative path that cannot climb out of the release directory."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise RegistryIntegrityError(
            f"Manifest names an unsafe file path '{path}'; refusing to write outside the cache."
        )
    return Path(*pure.parts)


def forget(digest: str, *, cache_dir: Path) -> None:
    """Remove this process's private copy of release `digest` and its shared cached files."""
    COPIES.forget(digest)
    shutil.rmtree(cache_dir / digest, ignore_errors=True)
