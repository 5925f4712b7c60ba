"""How much memory a loaded model takes, measured while it loads.

Two measurements, each blind where the other sees:

- the growth of the process's resident set (RSS, from ``/proc/self/statm``) across the
  load sees native memory that Python cannot (LightGBM and XGBoost boosters, ONNX Runtime
  sessions, torch storages) but reads low when the allocator reuses memory freed earlier
  (an evicted model's pages), and high for buffers the load frees again;
- the size of the object graph reachable from the loaded model (`object_graph_bytes`:
  ``sys.getsizeof`` over every object, numpy arrays with their data) is exact for what
  Python holds (scikit-learn estimators, python-flavor models) and independent of
  allocator history, but cannot see native handles.

`measure_footprint` takes the larger, so that neither blind spot lets a model in for
free.
"""

from __future__ import annotations

import gc
import os
import sys
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


def measure_footprint(load: Callable[[], T]) -> tuple[T, int]:
    """Run `load` and return its value with the memory it takes, in bytes.

    The larger of the RSS growth across the load and the value's object graph size (see
    the module docstring for why both).
    """
    before = resident_bytes()
    value = load()
    after = resident_bytes()
    grown = 0 if before is None or after is None else max(0, after - before)
    return value, max(grown, object_graph_bytes(value))
