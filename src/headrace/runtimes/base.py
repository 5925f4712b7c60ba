"""The contract between a release's model files and the inference core."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from headrace.types import Array, Matrix

__all__ = ["LoadedModel", "ModelOutput", "RuntimeLoader"]


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """What a model said about a batch, before post-processing.

    Parameters
    ----------
    predictions
        One value per row: the class label for a classifier, the value for a regressor.
    probabilities
        ``(rows, classes)`` class probabilities for a classifier that has them, else None.
    classes
        The class labels in the column order of `probabilities`, else None.
    """

    predictions: Array
    probabilities: Array | None = None
    classes: Array | None = None


@runtime_checkable
class LoadedModel(Protocol):
    """A model ready to score batches.

    The inference core calls `predict` with a 2-D matrix whose columns are the release's
    model inputs in order (float64 unless a `string` field is among them, then object);
    it must return one prediction per row, in row order, and may raise anything: the core
    wraps it in `ModelError` and isolates the rows that caused it.
    """

    flavor: str

    def predict(self, matrix: Matrix) -> ModelOutput:
        """Score every row of `matrix`."""
        ...


class RuntimeLoader(Protocol):
    """Loads one flavor. Called once per release load, after every file's sha256 was checked.

    `model_dir` holds the release's model files; `entry` names the main one (for the
    ``python`` flavor ``file.py:attribute``); `options` is the release config's
    ``runtime`` section. Raise `ModelLoadError` when the files are not a model of the flavor.
    """

    def __call__(self, model_dir: Path, entry: str, options: dict[str, Any]) -> LoadedModel:
        """Load the model."""
        ...
