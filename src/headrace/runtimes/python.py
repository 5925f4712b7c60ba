"""The ``python`` flavor: a model written as plain Python in a file of the release.

The entry is ``file.py:attribute``; ``file.py`` lies in the model directory and is run as
a module of its own (a unique name, so two releases never share state). The attribute is
one of:

- a function ``f(matrix)`` returning the predictions, a tuple ``(predictions,
  probabilities)`` or ``(predictions, probabilities, classes)``, or a `ModelOutput`;
  without classes, the probability columns are classes ``0..k-1`` (runtime option
  ``classes`` names them);
- a class, instantiated with no arguments, or an object: it must have ``predict`` and may
  have ``predict_proba`` with ``classes_``, like a scikit-learn estimator.

The file may import installed packages, not sibling files of the model directory. Its
module is not left in ``sys.modules`` (an evicted model must free its memory), so objects
it defines cannot be pickled.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import ModelLoadError
from headrace.runtimes._common import as_probabilities, entry_path, reason, sniff
from headrace.runtimes.base import LoadedModel, ModelOutput
from headrace.runtimes.sklearn import EstimatorModel
from headrace.types import Array, Matrix

__all__ = ["FunctionModel", "load"]


class FunctionModel:
    """A `LoadedModel` over a function ``f(matrix)`` from the user's file.

    Parameters
    ----------
    function
        The function; see the module docstring for what it may return.
    name
        ``file.py:attribute``, for error messages.
    classes
        The class labels of the probability columns, else ``0..k-1``.
    """

    __slots__ = ("_classes", "_function", "flavor", "name")

    def __init__(
        self, function: Callable[[Matrix], Any], *, name: str, classes: Array | None = None
    ) -> None:
        self.flavor = "python"
        self.name = name
        self._function = function
        self._classes = classes

    def predict(self, matrix: Matrix) -> ModelOutput:
        """Call the function on the whole batch and check it answered every row."""
        result = self._function(matrix)
        if isinstance(result, ModelOutput):
            output = result
        elif isinstance(result, tuple) and len(result) in (2, 3):
            probabilities = as_probabilities(result[1])
            if len(result) == 3:
                classes = np.asarray(result[2])
            elif self._classes is not None:
                classes = self._classes
            else:
                classes = np.arange(probabilities.shape[1], dtype=np.int64)
            output = ModelOutput(np.asarray(result[0]), probabilities, classes)
        else:
            output = ModelOutput(predictions=np.asarray(result))
        rows = len(matrix)
        if output.predictions.ndim == 0 or output.predictions.shape[0] != rows:
            raise ValueError(
                f"{self.name} returned {output.predictions.shape} predictions for {rows} rows; "
                "it must return one prediction per row"
            )
        return output

    def __repr__(self) -> str:
        return f"FunctionModel({self.name!r})"


def load(model_dir: Path, entry: str, options: dict[str, Any]) -> LoadedModel:
    """Import ``file.py`` from `model_dir` and wrap its attribute.

    Parameters
    ----------
    model_dir
        The directory holding the release's model files.
    entry
        ``file.py:attribute``, e.g. ``model.py:predict`` or ``model.py:FraudModel``.
    options
        ``classes``: the class labels of a function's probability columns.

    Raises
    ------
    ModelLoadError
        The entry is malformed, the file is missing or fails to import, the attribute is
        missing or neither a function nor a class/object with ``predict``.
    """
    file_name, sep, attribute = entry.rpartition(":")
    if not sep or not file_name or not attribute:
        raise ModelLoadError(
            f"Python model entry {entry!r} must be 'file.py:attribute', e.g. "
            "'model.py:predict'. Register the model with that entry."
        )
    path = entry_path(model_dir, entry=file_name, flavor="python")
    name = f"{path.name}:{attribute}"
    module = _import_file(path)
    if not hasattr(module, attribute):
        defined = sorted(
            key
            for key, value in vars(module).items()
            if not key.startswith("_")
            and callable(value)
            and getattr(value, "__module__", None) == module.__name__
        )
        listing = ", ".join(defined) if defined else "no functions or classes"
        raise ModelLoadError(
            f"Python model file '{path}' has no attribute '{attribute}' (it defines "
            f"{listing}). Fix the entry '{entry}' or add '{attribute}' to the file."
        )
    target = getattr(module, attribute)
    if inspect.isclass(target):
        try:
            target = target()
        except Exception as exc:
            raise ModelLoadError(
                f"Cannot load {name} from '{path}': calling {attribute}() raised "
                f"{type(exc).__name__}: {reason(exc)}. The class must build with no arguments."
            ) from exc
    if callable(getattr(target, "predict", None)):
        return EstimatorModel(target, flavor="python")
    if callable(target):
        classes = options.get("classes")
        return FunctionModel(
            target, name=name, classes=None if classes is None else np.asarray(classes)
        )
    raise ModelLoadError(
        f"Cannot load {name} from '{path}': '{attribute}' is a {type(target).__name__}, not a "
        "function or a class with predict(). Point the entry at one of those."
    )


def _import_file(path: Path) -> Any:
    """Run `path` as a fresh module with a unique name and return the module."""
    module_name = f"headrace_model_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(
            f"Cannot load '{path}' with the python flavor: it looks like "
            f"{sniff(path).description}, not a .py file. Register a Python source file "
            "as 'file.py:attribute'."
        )
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs (dataclasses and typing look their module up there), then
    # removed: the loaded model keeps the module alive, and evicting it frees the memory.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
        if sniff(path).flavor == "python":
            raise ModelLoadError(
                f"Cannot load python model file '{path}': {type(exc).__name__}: {reason(exc)}. "
                "Fix the file and register it again."
            ) from exc
        raise ModelLoadError(
            f"Cannot load '{path}' with the python flavor: it looks like "
            f"{sniff(path).description}, not Python source. Register it with the right --flavor."
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"Cannot load python model file '{path}': importing it raised "
            f"{type(exc).__name__}: {reason(exc)}. Fix the file or install what it imports."
        ) from exc
    finally:
        sys.modules.pop(module_name, None)
    return module
