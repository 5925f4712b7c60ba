"""The git commit of a model's directory, read from the repository's files, not from git.

Running ``git`` inside a directory the user hands to ``register`` runs whatever that
checkout's own config says: ``core.fsmonitor``, clean filters and hooks are programs, so a
hostile clone executes code at registration. This module never starts a process: it
reads ``.git/HEAD``, the loose ref or ``packed-refs``, and the index.

"Dirty" means a tracked file in the working tree differs from the index (its size, or,
when its timestamps are not those the index recorded, its blob hash). Changes that were
staged but not committed are not seen: telling them apart needs the commit's tree from
the object store (packs, deltas), which is git's job, not ours. Untracked files do not
count, as with ``git status --untracked-files=no``.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from pathlib import Path, PurePosixPath

__all__ = ["read_code_version"]

_OBJECT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_MAX_REF_DEPTH = 5
_MAX_INDEX_BYTES = 256 << 20
_HEADER = struct.Struct(">4sII")
# ctime s/ns, mtime s/ns, dev, ino, mode, uid, gid, size
_STAT = struct.Struct(">10I")
_ASSUME_VALID = 0x8000
_EXTENDED = 0x4000
_REGULAR = (0o100644, 0o100755)
_SYMLINK = 0o120000


def read_code_version(start: Path) -> str | None:
    """``<commit>`` of the repository holding `start` (``-dirty`` appended when a tracked
    file differs from the index), or None when there is no readable repository."""
    found = _find_git_dir(start)
    if found is None:
        return None
    worktree, git_dir = found
    common = _common_dir(git_dir)
    commit = _resolve_head(git_dir, common)
    if commit is None:
        return None
    try:
        dirty = _worktree_dirty(worktree, git_dir / "index", len(commit) == 64)
    except (OSError, ValueError, IndexError, struct.error):
        dirty = False  # an index we cannot read says nothing about the tree
    return f"{commit}-dirty" if dirty else commit


def _find_git_dir(start: Path) -> tuple[Path, Path] | None:
    here = start.absolute()
    for directory in (here, *here.parents):
        dot_git = directory / ".git"
        try:
            if dot_git.is_dir():
                return directory, dot_git
            if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
                text = dot_git.read_text(encoding="utf-8", errors="strict").strip()
                if not text.startswith("gitdir:"):
                    return None
                target = Path(text[len("gitdir:") :].strip())
                git_dir = target if target.is_absolute() else directory / target
                return (directory, git_dir) if git_dir.is_dir() else None
        except (OSError, UnicodeDecodeError):
            return None
    return None


def _common_dir(git_dir: Path) -> Path:
    try:
        text = (git_dir / "commondir").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return git_dir
    common = Path(text)
    return common if common.is_absolute() else git_dir / common


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            raw = handle.read(4096)
        return raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _resolve_head(git_dir: Path, common: Path) -> str | None:
    value = _read(git_dir / "HEAD")
    for _ in range(_MAX_REF_DEPTH):
        if value is None:
            return None
        if _OBJECT_ID.fullmatch(value):
            return value
        if not value.startswith("ref:"):
            return None
        value = _resolve_ref(value[len("ref:") :].strip(), git_dir, common)
    return None


def _resolve_ref(name: str, git_dir: Path, common: Path) -> str | None:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not name.startswith("refs/"):
        return None  # a ref that points outside the repository is not followed
    for base in (git_dir, common):
        value = _read(base.joinpath(*pure.parts))
        if value:
            return value
    packed = _read_packed(common / "packed-refs")
    return packed.get(name)


def _read_packed(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    refs: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line[0] in "#^":
            continue
        object_id, _, name = line.partition(" ")
        if _OBJECT_ID.fullmatch(object_id):
            refs[name.strip()] = object_id
    return refs


def _worktree_dirty(worktree: Path, index: Path, sha256: bool) -> bool:
    """Whether a tracked file differs from its index entry (DIRC versions 2 to 4)."""
    with index.open("rb") as handle:
        data = handle.read(_MAX_INDEX_BYTES + 1)
        index_mtime_ns = os.fstat(handle.fileno()).st_mtime_ns
    if len(data) > _MAX_INDEX_BYTES:
        return False
    signature, version, count = _HEADER.unpack_from(data, 0)
    if signature != b"DIRC" or version not in (2, 3, 4):
        return False
    id_size = 32 if sha256 else 20
    offset = _HEADER.size
    previous = b""
    for _ in range(count):
        start = offset
        fields = _STAT.unpack_from(data, offset)
        offset += _STAT.size
        object_id = data[offset : offset + id_size]
        offset += id_size
        (flags,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if version >= 3 and flags & _EXTENDED:
            offset += 2
        if version == 4:
            strip, offset = _varint(data, offset)
            end = data.index(b"\0", offset)
            path = previous[: len(previous) - strip] + data[offset:end]
            offset = end + 1
        else:
            end = data.index(b"\0", offset)
            path = data[offset:end]
            offset = start + ((end - start) // 8 + 1) * 8  # NUL padding to 8 bytes
        previous = path
        stage = (flags >> 12) & 0x3
        if stage or flags & _ASSUME_VALID:
            continue
        if _entry_differs(worktree, path, fields, object_id, index_mtime_ns, sha256):
            return True
    return False


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    """git's offset varint (index v4 path prefix lengths)."""
    byte = data[offset]
    offset += 1
    value = byte & 0x7F
    while byte & 0x80:
        byte = data[offset]
        offset += 1
        value = ((value + 1) << 7) | (byte & 0x7F)
    return value, offset


def _entry_differs(
    worktree: Path,
    raw_path: bytes,
    fields: tuple[int, ...],
    object_id: bytes,
    index_mtime_ns: int,
    sha256: bool,
) -> bool:
    mode, size = fields[6], fields[9]
    if mode not in _REGULAR and mode != _SYMLINK:
        return False  # a submodule (gitlink) is its own repository
    relative = PurePosixPath(os.fsdecode(raw_path))
    if relative.is_absolute() or ".." in relative.parts:
        return False  # not a path git would write; never read outside the work tree
    path = worktree.joinpath(*relative.parts)
    try:
        info = path.lstat()
    except OSError:
        return True  # deleted
    if (info.st_size & 0xFFFFFFFF) != size:
        return True
    ctime_ns = fields[0] * 1_000_000_000 + fields[1]
    mtime_ns = fields[2] * 1_000_000_000 + fields[3]
    if info.st_mtime_ns == mtime_ns and info.st_ctime_ns == ctime_ns and mtime_ns < index_mtime_ns:
        # Unchanged since the index saw it, and not "racily clean": git's own stat check.
        return False
    blob = hashlib.sha256() if sha256 else hashlib.sha1(usedforsecurity=False)
    if mode == _SYMLINK:
        target = os.fsencode(os.readlink(path))
        blob.update(b"blob %d\0" % len(target))
        blob.update(target)
        return blob.digest() != object_id
    blob.update(b"blob %d\0" % info.st_size)
    with path.open("rb") as handle:  # streamed: a tracked file may be gigabytes
        for block in iter(lambda: handle.read(1 << 20), b""):
            blob.update(block)
    return blob.digest() != object_id
