"""The contract between a release's model files and the inference core."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from headrace.types import Array, Matrix

__all__ = ["LoadedModel", "ModelOutput", "NativeSignature", "RuntimeLoader", "SignedModel"]


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


@dataclass(frozen=True, slots=True)
class NativeSignature:
    """What a loaded model says about itself: read at registration, never guessed.

    Parameters
    ----------
    names
        The input column names the model was fitted with, in its order, when it kept them.
    n_features
        How many input columns it takes, when it knows.
    dtypes
        The model's own element type per input (``float32``, ``string``...), when declared.
    numeric_only
        The model takes numbers only (a booster, a tensor network): a ``string`` field
        cannot feed it.
    frame
        It was fitted on a pandas DataFrame and may select columns by name.
    outputs
        ``(name, type, shape)`` of each output, ``None`` in a shape for any size.
    classes
        A classifier's labels, in probability-column order.
    source
        Where this was read, e.g. ``sklearn feature_names_in_``.
    """

    names: tuple[str, ...] | None = None
    n_features: int | None = None
    dtypes: tuple[str, ...] | None = None
    numeric_only: bool = False
    frame: bool = False
    outputs: tuple[tuple[str, str, tuple[int | None, ...] | None], ...] = ()
    classes: tuple[Any, ...] | None = None
    source: str = ""


@runtime_checkable
class LoadedModel(Protocol):
    """A model ready to score batches.

    The inference core calls `predict` with a 2-D matrix whose columns are the release's
    model inputs in order (float64 unless a `string` field is among them, then object),
    or, when the release's signature says the model was fitted on a DataFrame with
    non-numeric columns, a pandas DataFrame with those columns by name; it must return one
    prediction per row, in row order, and may raise anything: the core wraps it in
    `ModelError` and isolates the rows that caused it.
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


@runtime_checkable
class SignedModel(Protocol):
    """A loaded model that can describe its inputs and be called as it was fitted.

    Registration calls `signature` once to learn the model's own column names and count,
    and `reference_predict` on the reference sample (a DataFrame with the training
    columns) to check that the runtime's path gives the very same output.
    """

    def signature(self) -> NativeSignature:
        """What the model says about its inputs and outputs."""
        ...

    def reference_predict(self, frame: Any) -> ModelOutput:
        """Score a pandas DataFrame of model inputs the way the model was fitted."""
        ...
