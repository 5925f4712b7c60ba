"""Pick the loader for a flavor, and guess a flavor from a model file's name.

Flavor modules are imported only when a model of that flavor is loaded, so importing
headrace (or running ``headrace --help``) never imports scikit-learn, torch and the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from headrace.errors import ModelLoadError
from headrace.runtimes._common import sniff
from headrace.runtimes.base import LoadedModel, RuntimeLoader

__all__ = ["FLAVORS", "detect_flavor", "load_model"]

FLAVORS: tuple[str, ...] = ("sklearn", "lightgbm", "xgboost", "onnx", "torch", "python")
"""Every model flavor headrace can load, in the order the docs list them."""

_BY_SUFFIX = {
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".joblib": "sklearn",
    ".onnx": "onnx",
    ".pt": "torch",
    ".pth": "torch",
    ".pt2": "torch",
    ".torchscript": "torch",
    ".py": "python",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
    ".lgb": "lightgbm",
}
# Suffixes that also name config files, notes and helper code: inside a directory they
# count only when the file's content agrees.
_WEAK_SUFFIXES = frozenset({".json", ".txt", ".py"})


def load_model(
    flavor: str,
    *,
    model_dir: Path,
    entry: str,
    options: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load a release's model files into a `LoadedModel`.

    Parameters
    ----------
    flavor
        One of `FLAVORS`.
    model_dir
        The directory holding the release's model files (already integrity-checked).
    entry
        The main file inside `model_dir`; for ``python``, ``file.py:attribute``.
    options
        The release config's ``runtime`` section, passed to the flavor's loader.

    Returns
    -------
    LoadedModel
        A model whose ``predict(matrix)`` scores a batch.

    Raises
    ------
    ModelLoadError
        The flavor is unknown, or the files are missing or not a model of the flavor.
    DependencyMissingError
        The flavor's library is not installed; the message has the pip command.
    """
    loader = _loader(flavor)
    return loader(Path(model_dir), entry, dict(options or {}))


def _loader(flavor: str) -> RuntimeLoader:
    # One import per branch, inside the function: see the module docstring.
    if flavor == "sklearn":
        from headrace.runtimes import sklearn

        return sklearn.load
    if flavor == "lightgbm":
        from headrace.runtimes import lightgbm

        return lightgbm.load
    if flavor == "xgboost":
        from headrace.runtimes import xgboost

        return xgboost.load
    if flavor == "onnx":
        from headrace.runtimes import onnx

        return onnx.load
    if flavor == "torch":
        from headrace.runtimes import torch

        return torch.load
    if flavor == "python":
        from headrace.runtimes import python

        return python.load
    raise ModelLoadError(
        f"Unknown model flavor {flavor!r}: expected one of {', '.join(FLAVORS)}. "
        "Pass one of those with --flavor, or fix the flavor in the release config."
    )


def detect_flavor(path: Path) -> str | None:
    """Guess the flavor of a model file, or of the model files in a directory.

    Parameters
    ----------
    path
        A model file (judged by its extension, e.g. ``.onnx`` -> ``onnx``) or a directory.
        In a directory, ``.json``, ``.txt`` and ``.py`` files count only when their
        content looks like an XGBoost model, a LightGBM model or Python source, so a
        README or a config file next to the model does not decide.

    Returns
    -------
    str or None
        The flavor, or None when the extension is unknown or a directory holds files of
        several flavors (then pass ``--flavor``).
    """
    path = Path(path)
    if not path.is_dir():
        return _BY_SUFFIX.get(path.suffix.lower())
    strong: set[str] = set()
    weak: set[str] = set()
    for child in sorted(path.iterdir()):
        if not child.is_file() or child.name.startswith("."):
            continue
        suffix = child.suffix.lower()
        flavor = _BY_SUFFIX.get(suffix)
        if flavor is None:
            continue
        if suffix not in _WEAK_SUFFIXES:
            strong.add(flavor)
        elif sniff(child).flavor == flavor:
            weak.add(flavor)
    candidates = strong or weak
    return next(iter(candidates)) if len(candidates) == 1 else None
