"""Fake models for tests: no model files, no ML libraries, predictable behaviour.

`ConstantModel` always answers the same; `FailingModel` raises on the batches you choose,
the way a model meets a poison event in production::

    model = FailingModel(fail_when=lambda m: m[:, 0] < 0)  # a negative first column is poison
    model.predict(np.array([[1.0], [2.0]]))   # fine: answers like ConstantModel()
    model.predict(np.array([[1.0], [-1.0]]))  # RuntimeError naming row 1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from headrace.runtimes.base import LoadedModel, ModelOutput
from headrace.types import Array, Matrix

__all__ = ["ConstantModel", "FailingModel"]


class ConstantModel:
    """A `LoadedModel` that predicts `value` for every row.

    Parameters
    ----------
    value
        The prediction for every row.
    probabilities
        One row of class probabilities repeated for every row, or None for a regressor.
    classes
        The class labels of `probabilities`; ``0..k-1`` when omitted.

    Attributes
    ----------
    calls
        How many times `predict` ran.
    """

    flavor = "testing"

    def __init__(
        self,
        value: Any = 0,
        *,
        probabilities: Sequence[float] | None = None,
        classes: Sequence[Any] | None = None,
    ) -> None:
        self.value = value
        self.calls = 0
        self._proba = None if probabilities is None else np.asarray(probabilities, np.float64)
        self._classes: Array | None = None
        if self._proba is not None:
            count = self._proba.shape[0]
            self._classes = np.asarray(classes) if classes is not None else np.arange(count)

    def predict(self, matrix: Matrix) -> ModelOutput:
        """Answer `value` (and the fixed probabilities) for each row of `matrix`."""
        self.calls += 1
        rows = len(matrix)
        predictions = np.full(rows, self.value)
        if self._proba is None:
            return ModelOutput(predictions=predictions)
        probabilities = np.tile(self._proba, (rows, 1))
        return ModelOutput(predictions, probabilities, self._classes)


class FailingModel:
    """A `LoadedModel` whose `predict` raises `RuntimeError`, always or on poison rows.

    Parameters
    ----------
    fail_when
        ``f(matrix) -> bool mask``, one entry per row: any True row makes the whole call
        raise, as a real model fails a whole batch over one bad event. None: every call
        raises.
    model
        Answers the batches that do not fail; a `ConstantModel` when omitted.
    message
        The start of the `RuntimeError` message.

    Attributes
    ----------
    calls
        How many times `predict` ran, failed or not.
    failures
        How many of those calls raised.
    """

    flavor = "testing"

    def __init__(
        self,
        *,
        fail_when: Callable[[Matrix], Array] | None = None,
        model: LoadedModel | None = None,
        message: str = "model failed",
    ) -> None:
        self.fail_when = fail_when
        self.model: LoadedModel = model if model is not None else ConstantModel()
        self.message = message
        self.calls = 0
        self.failures = 0

    def predict(self, matrix: Matrix) -> ModelOutput:
        """Raise `RuntimeError` when `fail_when` marks any row, else delegate to `model`."""
        self.calls += 1
        if self.fail_when is None:
            self.failures += 1
            raise RuntimeError(f"{self.message} (FailingModel fails every batch)")
        mask = np.asarray(self.fail_when(matrix), dtype=bool).reshape(-1)
        if mask.shape[0] != len(matrix):
            raise ValueError(
                f"fail_when returned {mask.shape[0]} flags for {len(matrix)} rows; "
                "it must return one bool per row"
            )
        if mask.any():
            self.failures += 1
            rows = np.flatnonzero(mask).tolist()
            raise RuntimeError(f"{self.message} on poison rows {rows} of a {len(matrix)}-row batch")
        return self.model.predict(matrix)
