"""The ``lightgbm`` flavor: a native LightGBM Booster text model (``booster.save_model``).

The task comes from the objective saved in the model: ``binary`` gives probabilities for
classes ``[0, 1]``, ``multiclass``/``multiclassova`` a probability matrix for classes
``0..k-1``, every other objective (regression, ranking, cross-entropy) the raw values.
Class labels are the booster's indices: LightGBM does not save the original labels.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import ModelLoadError
from headrace.runtimes._common import (
    SAVE_HOWTO,
    binary_output,
    class_output,
    entry_path,
    import_optional,
    not_a_model,
    real_names,
)
from headrace.runtimes.base import LoadedModel, ModelOutput, NativeSignature
from headrace.types import Matrix

__all__ = ["LightGBMModel", "load"]

_MULTICLASS = frozenset({"multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr"})


class LightGBMModel:
    """A loaded LightGBM Booster.

    Parameters
    ----------
    booster
        The ``lightgbm.Booster``.
    objective
        The objective it was trained with, as saved in the model file.
    """

    __slots__ = ("_booster", "flavor", "objective")

    def __init__(self, booster: Any, *, objective: str) -> None:
        self.flavor = "lightgbm"
        self.objective = objective
        self._booster = booster

    def predict(self, matrix: Matrix) -> ModelOutput:
        """Score the batch with the best iteration the model file kept."""
        data = np.asarray(matrix, dtype=np.float64)
        return self._read(self._booster.predict(data))

    def reference_predict(self, frame: Any) -> ModelOutput:
        """Score a DataFrame; LightGBM checks its column names against the model's."""
        named = real_names(self._booster.feature_name()) is not None
        if not named:
            return self._read(self._booster.predict(frame.to_numpy(dtype=np.float64)))
        return self._read(self._booster.predict(frame, validate_features=True))

    def signature(self) -> NativeSignature:
        """``feature_name()`` (``Column_i`` stand-ins count as no names) and ``num_feature()``."""
        names = real_names(self._booster.feature_name())
        return NativeSignature(
            names=names,
            n_features=int(self._booster.num_feature()),
            numeric_only=True,
            source="lightgbm feature_name()" if names else "lightgbm num_feature()",
        )

    def _read(self, scores: Any) -> ModelOutput:
        raw = np.asarray(scores, dtype=np.float64)
        if self.objective == "binary":
            if raw.ndim == 1:
                return binary_output(raw, tie_is_positive=False)
            return class_output(raw)
        if self.objective in _MULTICLASS:
            return class_output(raw)
        return ModelOutput(predictions=raw)

    def __repr__(self) -> str:
        return f"LightGBMModel(objective={self.objective!r})"


def load(model_dir: Path, entry: str, options: dict[str, Any]) -> LoadedModel:
    """Load a LightGBM text model file.

    Parameters
    ----------
    model_dir
        The directory holding the release's model files.
    entry
        The file name inside `model_dir`, e.g. ``model.txt``.
    options
        Unused; accepted for the `RuntimeLoader` contract.

    Raises
    ------
    ModelLoadError
        The file is missing or not a LightGBM model.
    DependencyMissingError
        lightgbm is not installed.
    """
    path = entry_path(model_dir, entry=entry, flavor="lightgbm")
    lgb = import_optional("lightgbm", package="lightgbm", extra="lightgbm", flavor="lightgbm")
    # A text model always starts with "tree"; checking first spares the user LightGBM's
    # "[LightGBM] [Fatal]" line on stderr for a file that was never a LightGBM model.
    with path.open("rb") as file:
        head = file.read(8)
    if not head.lstrip().startswith(b"tree"):
        raise not_a_model(path, flavor="lightgbm")
    # LightGBM 4.x calls std::terminate (the whole process dies) on a model file cut off
    # inside its trees, so a truncated file must never reach it.
    if not _has_end_of_trees(path):
        raise ModelLoadError(
            f"Cannot load '{path}' with the lightgbm flavor: the file is truncated (it has no "
            f"'end of trees' line). Re-save it with {SAVE_HOWTO['lightgbm']}."
        )
    try:
        booster = lgb.Booster(model_file=str(path))
    except Exception as exc:
        raise not_a_model(path, flavor="lightgbm", exc=exc) from exc
    return LightGBMModel(booster, objective=_objective(path))


def _has_end_of_trees(path: Path) -> bool:
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(b"\nend of trees") != -1


def _objective(path: Path) -> str:
    """The objective from the model's header, e.g. ``binary`` from ``objective=binary sigmoid:1``.

    A model trained with a custom objective has no such line; its raw scores are values.
    """
    with path.open("r", encoding="utf-8", errors="replace") as file:
        for line in file:
            if line.startswith("objective="):
                words = line[len("objective=") :].split()
                return words[0] if words else "custom"
            if line.startswith("Tree="):  # the header is over
                break
    return "custom"
