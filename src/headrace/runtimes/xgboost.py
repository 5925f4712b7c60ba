"""The ``xgboost`` flavor: a Booster saved as JSON or UBJSON (``model.save_model``).

The task comes from the objective in the booster's saved config: ``binary:logistic`` and
``binary:logitraw`` give probabilities for classes ``[0, 1]``, ``multi:softprob`` and
``multi:softmax`` a probability matrix for classes ``0..k-1`` (a softmax over the margins
for ``multi:softmax``, as ``XGBClassifier.predict_proba`` does), every other objective the
raw values. Like ``XGBClassifier``, scoring stops at ``best_iteration`` when early
stopping recorded one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from headrace.runtimes._common import (
    binary_output,
    class_output,
    entry_path,
    import_optional,
    not_a_model,
    sigmoid,
    softmax,
)
from headrace.runtimes.base import LoadedModel, ModelOutput, NativeSignature
from headrace.types import Matrix

__all__ = ["XGBoostModel", "load"]


class XGBoostModel:
    """A loaded XGBoost Booster.

    Parameters
    ----------
    booster
        The ``xgboost.Booster``.
    objective
        The objective name from its config, e.g. ``binary:logistic``.
    iteration_range
        The trees to use, ``(0, 0)`` for all of them.
    """

    __slots__ = ("_booster", "_range", "flavor", "objective")

    def __init__(self, booster: Any, *, objective: str, iteration_range: tuple[int, int]) -> None:
        self.flavor = "xgboost"
        self.objective = objective
        self._booster = booster
        self._range = iteration_range

    def predict(self, matrix: Matrix) -> ModelOutput:
        """Score the batch (``inplace_predict``: no DMatrix copy)."""
        data = np.asarray(matrix, dtype=np.float64)
        margin = self.objective in ("binary:logitraw", "multi:softmax")
        raw = self._booster.inplace_predict(
            data, iteration_range=self._range, predict_type="margin" if margin else "value"
        )
        return self._read(raw, margin=margin)

    def reference_predict(self, frame: Any) -> ModelOutput:
        """Score a DataFrame through a DMatrix; XGBoost checks the names against the model's."""
        import xgboost as xgb

        margin = self.objective in ("binary:logitraw", "multi:softmax")
        if self._booster.feature_names is None:
            frame = frame.to_numpy(dtype=np.float64)
        raw = self._booster.predict(
            xgb.DMatrix(frame),
            iteration_range=self._range,
            output_margin=margin,
            validate_features=True,
        )
        return self._read(raw, margin=margin)

    def signature(self) -> NativeSignature:
        """``feature_names`` and ``num_features()`` of the booster."""
        names = self._booster.feature_names
        return NativeSignature(
            names=None if not names else tuple(str(n) for n in names),
            n_features=int(self._booster.num_features()),
            numeric_only=True,
            source="xgboost feature_names" if names else "xgboost num_features()",
        )

    def _read(self, scores: Any, *, margin: bool) -> ModelOutput:
        raw = np.asarray(scores, dtype=np.float64)
        if self.objective in ("binary:logistic", "binary:logitraw") and raw.ndim == 1:
            return binary_output(sigmoid(raw) if margin else raw, tie_is_positive=False)
        if self.objective.startswith("binary:") and raw.ndim == 1:  # binary:hinge: 0 or 1
            return ModelOutput(predictions=raw.astype(np.int64))
        if self.objective in ("multi:softprob", "multi:softmax"):
            return class_output(softmax(raw) if margin else raw)
        return ModelOutput(predictions=raw)

    def __repr__(self) -> str:
        return f"XGBoostModel(objective={self.objective!r})"


def load(model_dir: Path, entry: str, options: dict[str, Any]) -> LoadedModel:
    """Load an XGBoost JSON or UBJSON model file.

    Parameters
    ----------
    model_dir
        The directory holding the release's model files.
    entry
        The file name inside `model_dir`, e.g. ``model.json`` or ``model.ubj``.
    options
        Unused; accepted for the `RuntimeLoader` contract.

    Raises
    ------
    ModelLoadError
        The file is missing or not an XGBoost model.
    DependencyMissingError
        xgboost is not installed.
    """
    path = entry_path(model_dir, entry=entry, flavor="xgboost")
    xgb = import_optional("xgboost", package="xgboost", extra="xgboost", flavor="xgboost")
    try:
        booster = xgb.Booster(model_file=str(path))
        learner = json.loads(booster.save_config())["learner"]
        objective = str(learner["objective"]["name"])
        kind = str(learner["gradient_booster"]["name"])
        best = booster.attr("best_iteration")
    except Exception as exc:
        raise not_a_model(path, flavor="xgboost", exc=exc) from exc
    # gblinear has no trees to cut; XGBClassifier ignores best_iteration for it too.
    iteration_range = (0, int(best) + 1) if best is not None and kind != "gblinear" else (0, 0)
    return XGBoostModel(booster, objective=objective, iteration_range=iteration_range)
