"""The ``python`` flavor: a model written as plain Python in a file of the release.

The entry is ``file.py:attribute`` or ``module:attribute`` (a dotted module path inside the
model directory, e.g. ``wrapper:Model`` or ``pkg.model:Model``). The model directory is the
release's own verified copy, imported as a package of its own under a unique name (two
releases never share state), so the entry module may import its siblings relatively
(``from . import features``, ``from .util import clean``) and read files next to it through
``Path(__file__).parent``. The attribute is one of:

- a function ``f(matrix)`` returning the predictions, a tuple ``(predictions,
  probabilities)`` or ``(predictions, probabilities, classes)``, or a `ModelOutput`;
  without classes, the probability columns are classes ``0..k-1`` (runtime option
  ``classes`` names them);
- a class, instantiated with no arguments, or an object: it must have ``predict`` and may
  have ``predict_proba`` with ``classes_``, like a scikit-learn estimator.

Sibling modules must be imported while the entry module loads (a relative import inside a
function that runs at predict time fails): the release's modules are not left in
``sys.modules`` (an evicted model must free its memory), so objects they define cannot be
pickled. A ``requirements.txt`` in the model directory is checked against the installed
packages before anything is imported.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import sys
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import ModelLoadError
from headrace.runtimes._common import (
    as_probabilities,
    entry_path,
    module_file,
    reason,
    sniff,
)
from headrace.runtimes.base import LoadedModel, ModelOutput
from headrace.runtimes.sklearn import EstimatorModel
from headrace.types import Array, Matrix

__all__ = ["FunctionModel", "load"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


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
            f"Python model entry {entry!r} must be 'file.py:attribute' or 'module:attribute', "
            "e.g. 'model.py:predict'. Register the model with that entry."
        )
    path = entry_path(model_dir, entry=module_file(model_dir, file_name), flavor="python")
    name = f"{path.name}:{attribute}"
    _check_requirements(model_dir / "requirements.txt")
    module = _import_file(path, root=model_dir)
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


def _check_requirements(path: Path) -> None:
    """Refuse to import a release whose requirements.txt the environment does not meet."""
    if not path.is_file():
        return
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # not a dependency of headrace: then only names are checked
        _check_names(path)
        return

    problems: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue  # pip options (-r, --index-url) say nothing about what is installed
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise ModelLoadError(
                f"Line {number} of the release's requirements.txt ({line!r}) is not a "
                f"requirement: {reason(exc)}. Fix the file and register the model again."
            ) from exc
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{requirement} (not installed)")
            continue
        if requirement.specifier and not requirement.specifier.contains(
            installed, prereleases=True
        ):
            problems.append(f"{requirement} (installed {installed})")
    if problems:
        raise ModelLoadError(
            f"The python model needs {', '.join(problems)} (its requirements.txt): install "
            f"them where it is served, e.g. pip install -r {path.name} from the release."
        )


def _check_names(path: Path) -> None:
    missing = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        found = _NAME.match(raw.split("#", 1)[0].strip())
        if found is None:
            continue
        try:
            importlib.metadata.version(found.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(found.group(0))
    if missing:
        raise ModelLoadError(
            f"The python model needs {', '.join(missing)} (its requirements.txt), which "
            "is not installed: install it where the model is served."
        )


def _import_file(path: Path, *, root: Path | None = None) -> Any:
    """Run `path` as a fresh module of a package made of `root` (its directory by
    default), under a unique name, and return the module."""
    root = path.parent if root is None else root
    package_name = f"headrace_model_{uuid.uuid4().hex}"
    relative = path.relative_to(root).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not path.name.endswith(".py") or not parts:
        raise ModelLoadError(
            f"Cannot load '{path}' with the python flavor: it looks like "
            f"{sniff(path).description}, not a .py file. Register a Python source file "
            "as 'file.py:attribute'."
        )
    package = types.ModuleType(package_name)
    package.__path__ = [str(root)]
    module_name = ".".join([package_name, *parts])
    # Registered while they run (relative imports, dataclasses and typing look modules up
    # there), then removed: the loaded model keeps its modules alive, and evicting it
    # frees the memory. No bytecode is written into the release's verified copy.
    sys.modules[package_name] = package
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        module = importlib.import_module(module_name)
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
        sys.dont_write_bytecode = writes_bytecode
        for loaded in [m for m in sys.modules if m.split(".", 1)[0] == package_name]:
            del sys.modules[loaded]
    return module
