"""Import what loading a model will import, before its load is measured.

The first model of a flavor loaded in a process pays for importing its library: the
resident set grows by 140 MB for ``import sklearn`` alone on this machine (shared
libraries mapped, module objects, BLAS and OpenMP pools), where a 30-tree random forest
takes 5 MB. `ModelPool` measures a load by the growth of the resident set, so without
this step the first model was charged for the library and refused under a tight budget.
`import_runtime` is that step: run it before the measurement, and the footprint is the
model's own memory.

For pickles (the ``sklearn`` flavor), the modules to import are read from the pickle's
``GLOBAL``/``STACK_GLOBAL`` opcodes with `pickletools`, which decodes opcodes without
running any of them. It is best effort: joblib writes array bytes between the opcodes, so
the scan stops at the first array and only sees the globals before it (the estimator's
class, which imports its library, comes first). A module that fails to import is skipped:
the load itself raises the clear error.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import importlib
import io
import logging
import lzma
import pickletools
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final, cast

from headrace.runtimes._common import module_file

__all__ = ["import_runtime", "pickle_modules"]

_log = logging.getLogger(__name__)

# The libraries each flavor's loader imports (the python flavor's are in the user's file).
_LIBRARIES: Final = {
    "sklearn": ("joblib",),
    "lightgbm": ("lightgbm",),
    "xgboost": ("xgboost",),
    "onnx": ("onnxruntime",),
    "torch": ("torch",),
    "python": (),
}
_PICKLE_SUFFIXES: Final = frozenset({".pkl", ".pickle", ".joblib"})
# Bounds the scan of a pickle: a few thousand opcodes name every class of a model; the
# rest is its data.
_MAX_OPCODES: Final = 200_000
_STRINGS: Final = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_MEMO_GETS: Final = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUTS: Final = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
# joblib writes compressed files in these formats (lz4 needs a package: not scanned).
_GZIP: Final = b"\x1f\x8b"
_BZ2: Final = b"BZh"
_XZ: Final = b"\xfd7zXZ\x00"
_LZMA: Final = b"\x5d\x00\x00"
_ZLIB: Final = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")


def import_runtime(flavor: str, *, model_dir: Path, entry: str) -> list[str]:
    """Import the modules loading this model will import; return those now imported.

    Parameters
    ----------
    flavor
        The model's flavor (an unknown one imports nothing: the load reports it).
    model_dir
        The directory holding the release's model files (integrity-checked: a pickle is
        only read, never unpickled, but its modules are imported).
    entry
        The main file inside `model_dir` (``file.py:attribute`` for ``python``).

    Returns
    -------
    list of str
        The modules imported, in order; already imported ones are not listed.
    """
    names: list[str] = []
    runtime = f"headrace.runtimes.{flavor}" if flavor in _LIBRARIES else None
    if runtime is not None:
        names.append(runtime)
        names.extend(_LIBRARIES[flavor])
    path = model_dir / entry.partition(":")[0] if entry else None
    if flavor == "python" and entry:
        path = model_dir / module_file(model_dir, entry.rpartition(":")[0])
    if path is not None and path.is_file():
        if flavor == "sklearn" or path.suffix.lower() in _PICKLE_SUFFIXES:
            names.extend(pickle_modules(path))
        elif flavor == "python" and path.suffix == ".py":
            names.extend(_source_imports(path))
    imported: list[str] = []
    for name in dict.fromkeys(names):
        if _import(name):
            imported.append(name)
    return imported


def _import(name: str) -> bool:
    """Import `name` if it is not yet; whether it was imported now."""
    import sys

    if name in sys.modules or name in ("__main__", "builtins", "__builtin__"):
        return False
    try:
        importlib.import_module(name)
    except Exception as exc:  # the load raises it with the flavor's own message
        _log.debug("pre-importing %s failed: %s", name, exc)
        return False
    return True


def pickle_modules(path: Path) -> list[str]:
    """The modules a pickle (plain, or a joblib file, maybe compressed) names, in order.

    Reads opcodes with `pickletools.genops` (nothing is unpickled) until the pickle ends,
    cannot be decoded further (joblib's raw array bytes) or `_MAX_OPCODES` were read.
    """
    modules: dict[str, None] = {}
    try:
        with _open_pickle(path) as stream:
            for module in _globals(cast("IO[bytes]", stream)):
                modules[module] = None
    except OSError as exc:
        _log.debug("cannot scan pickle %s: %s", path, exc)
    return list(modules)


def _open_pickle(path: Path) -> io.BufferedIOBase:
    with path.open("rb") as probe:
        head = probe.read(6)
    if head.startswith(_GZIP):
        return gzip.open(path, "rb")
    if head.startswith(_BZ2):
        return bz2.open(path, "rb")
    if head.startswith((_XZ, _LZMA)):
        return lzma.open(path, "rb")
    if head[:2] in _ZLIB:
        return io.BufferedReader(_ZlibReader(path))
    return io.BufferedReader(io.FileIO(path, "rb"))


class _ZlibReader(io.RawIOBase):
    """A raw zlib stream (joblib's ``compress=True``) read as its decompressed bytes."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self._inflate = zlib.decompressobj()
        self._pending = b""
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._inflate.eof:
            chunk = self._file.read(65_536)
            if not chunk:
                break
            self._pending = self._inflate.decompress(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self._position += size
        return size

    def tell(self) -> int:  # pickletools asks for positions
        return self._position

    def close(self) -> None:
        self._file.close()
        super().close()


def _globals(stream: IO[bytes]) -> Iterator[str]:
    """The module of every global a pickle stream loads, as far as it can be decoded."""
    memo: dict[int, str | None] = {}
    stack: list[str | None] = []  # the last values pushed (strings, else None)
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(stream)):
            if count >= _MAX_OPCODES:
                return
            name = opcode.name
            if name == "GLOBAL" or name == "INST":
                yield str(arg).partition(" ")[0]
                stack.append(None)
            elif name == "STACK_GLOBAL":
                module = stack[-2] if len(stack) >= 2 else None
                if module is not None:
                    yield module
                stack.append(None)
            elif name in _STRINGS:
                stack.append(str(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
                continue
            elif name in _MEMO_PUTS:
                memo[int(str(arg))] = stack[-1] if stack else None
                continue
            elif name in _MEMO_GETS:
                stack.append(memo.get(int(str(arg))))
            elif name == "STOP":
                return
            else:
                stack.append(None)
            del stack[:-2]
    except (ValueError, EOFError, UnicodeDecodeError, zlib.error, lzma.LZMAError) as exc:
        _log.debug("stopped scanning a pickle: %s", exc)


def _source_imports(path: Path) -> list[str]:
    """The absolute modules a Python file imports at its top level (parsed, not run)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return []  # the load reports it
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names
