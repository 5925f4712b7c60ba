"""How much memory a loaded model takes, measured while it loads.

Measured on this machine (``benchmarks/pool_footprint.py``, numbers in
``benchmarks/README.md``) for models of known size (a 40 MB python-flavor weight matrix, a
25 MB scikit-learn random forest, a LightGBM booster):

- the object graph reachable from the model (`object_graph_bytes`) is exact for what
  Python holds (the 40 MB matrix) but sees 0 MB of the forest and the booster, whose
  trees live in native memory; tracemalloc is blind to them the same way (0.1 MB);
- the growth of the resident set (RSS, ``/proc/self/statm``) sees native memory, but only
  once ``malloc_trim`` has handed freed heap back to the kernel before and after the load:
  without it, a model loaded after another was freed (an eviction) measured 0 MB, and a
  first load counted its freed buffers too (50 MB for the 25 MB forest). With it: 25.3 MB,
  for about 3 ms.

`measure_footprint` takes the larger of the two, and runs one measured load at a time so
that concurrent loads are not charged for each other (loading is CPU-bound anyway). Memory
freed elsewhere during a load still hides from it; `ModelPool` therefore frees what it
evicts outside measurements, and keeps the largest footprint seen per model.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import types
from collections.abc import Callable
from typing import TypeVar

import numpy as np

__all__ = ["measure_footprint", "object_graph_bytes", "resident_bytes"]

T = TypeVar("T")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# Shared by every model: counting them would charge each model for the interpreter.
_OPAQUE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.CodeType)


def resident_bytes() -> int | None:
    """The process's resident set size, or None where ``/proc`` is not available."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def object_graph_bytes(root: object) -> int:
    """Bytes of every object reachable from `root` (each counted once).

    Modules, classes and functions are not counted nor followed: they are shared by
    every model of their kind and would charge one model for the whole interpreter.
    """
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        ident = id(obj)
        if ident in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(ident)
        if isinstance(obj, np.ndarray):
            # Arrays are not tracked by gc: follow a view to the array owning its data,
            # and an object array to its elements, by hand.
            total += sys.getsizeof(obj)
            if obj.base is not None:
                stack.append(obj.base)
            if obj.dtype.hasobject:
                stack.extend(obj.ravel(order="K").tolist())
            continue
        try:
            total += sys.getsizeof(obj)
        except TypeError:  # some extension objects refuse
            continue
        stack.extend(gc.get_referents(obj))
    return total


def _trim() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _load_malloc_trim()
# Held across a measured load. Re-entrant, so that the pool can hold it around a load and
# the admission that follows: whoever frees a large object while a load is measured makes
# that load look smaller by as much, so the pool drops evicted models under it too.
_MEASURING = threading.RLock()


def measure_footprint(load: Callable[[], T]) -> tuple[T, int]:
    """Run `load` and return its value with the memory it takes, in bytes.

    The larger of the RSS growth across the load (freed heap trimmed before and after)
    and the value's object graph size; see the module docstring for why both. Measured
    loads run one at a time.
    """
    with _MEASURING:
        _trim()
        before = resident_bytes()
        value = load()
        _trim()
        after = resident_bytes()
    grown = 0 if before is None or after is None else max(0, after - before)
    return value, max(grown, object_graph_bytes(value))
