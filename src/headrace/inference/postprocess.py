"""Post-processing: a model's raw output becomes one prediction and one score per row.

- binary classifier with probabilities: the score is P(positive class), the positive
  class's probability (the config's `positive_class`, else the last class); the
  prediction is the positive class when the score is >= the config's `threshold`, else
  the negative one (without a threshold, the model's own prediction);
- multiclass classifier with probabilities: the score is the probability of the
  predicted class (the maximum for a model that predicts the most probable class);
- classifier without probabilities: the model's prediction, no score;
- regression: the model's value, no score.

Class predictions are renamed through the config's `labels` (by position in the model's
class order) when they are given. A classifier with probabilities also hands on every
class's probability (`Outputs.probabilities`, columns in `Outputs.classes` order), for the
``proba_<class>`` columns of batch output, the ``probabilities`` OIP output and the opt-in
stream field. Everything is vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from headrace.errors import ModelError, SchemaError
from headrace.release.config import ReleaseConfig
from headrace.runtimes.base import ModelOutput
from headrace.types import Array

__all__ = ["Outputs", "postprocess"]


@dataclass(frozen=True, slots=True)
class Outputs:
    """The post-processed predictions of a batch.

    Attributes
    ----------
    predictions
        One prediction per row: a class (or its label) or a value.
    scores
        float64, one per row, for a classifier with probabilities; else None. For a binary
        classifier it is P(positive class), whatever the prediction.
    probabilities
        float64 ``(rows, classes)``, every class's probability, for a classifier with
        probabilities; else None.
    classes
        The class names of the `probabilities` columns (the config's labels when given),
        as text; None without probabilities.
    """

    predictions: Array
    scores: npt.NDArray[np.float64] | None
    probabilities: npt.NDArray[np.float64] | None = None
    classes: tuple[str, ...] | None = None


def _show_classes(classes: Array) -> str:
    shown = classes[:10].tolist()
    more = f" (and {len(classes) - 10} more)" if len(classes) > 10 else ""
    return f"{shown!r}{more}"


def _class_names(names: Array) -> tuple[str, ...]:
    """Class names as text (``proba_<name>`` columns, OIP output parameters)."""
    return tuple(str(n.item() if isinstance(n, np.generic) else n) for n in names.tolist())


def _positions(predictions: Array, classes: Array) -> npt.NDArray[np.intp]:
    """The index in `classes` of every prediction."""
    k = len(classes)
    try:
        sorter = np.argsort(classes, kind="stable")
        found = np.searchsorted(classes, predictions, sorter=sorter)
        idx = sorter[np.clip(found, 0, k - 1)]
        ok = np.asarray(classes[idx] == predictions, dtype=np.bool_)
    except TypeError:  # predictions and classes of incomparable types
        ok = np.zeros(len(predictions), dtype=np.bool_)
        idx = np.zeros(len(predictions), dtype=np.intp)
    if not ok.all():
        bad = predictions[np.flatnonzero(~ok)[0]]
        bad = bad.item() if isinstance(bad, np.generic) else bad
        raise ModelError(
            f"Model predicted {bad!r}, which is not one of its classes "
            f"{_show_classes(classes)}: its predictions and class list disagree; check the "
            "model's classes (for a python model, return `classes` in ModelOutput)"
        )
    return np.asarray(idx, dtype=np.intp)


def _integer_positions(predictions: Array, k: int) -> npt.NDArray[np.intp]:
    """Predictions used as class indices, when the model names no classes."""
    values = np.asarray(predictions)
    if values.dtype.kind in "iu" or (
        values.dtype.kind == "f" and bool(np.all(values == np.floor(values)))
    ):
        idx = values.astype(np.intp)
        if idx.size == 0 or (idx.min() >= 0 and idx.max() < k):
            return idx
    raise ModelError(
        f"Model predictions {values[:5].tolist()!r} cannot be mapped to the {k} config labels: "
        "without a class list from the model, labels map class indices 0..k-1; return "
        "`classes` from the model or remove `labels`"
    )


def _positive_index(config: ReleaseConfig, classes: Array) -> int:
    wanted = config.positive_class
    if wanted is None:
        return len(classes) - 1
    listed: list[Any] = classes.tolist()
    if wanted in listed:
        return listed.index(wanted)
    if config.labels is not None and wanted in config.labels:
        return config.labels.index(wanted)
    as_text = [str(c) for c in listed]
    if str(wanted) in as_text:
        return as_text.index(str(wanted))
    raise SchemaError(
        f"positive_class {wanted!r} in the release config is neither a model class "
        f"{_show_classes(classes)} nor a label {config.labels!r}: set positive_class to one "
        "of them"
    )


def postprocess(output: ModelOutput, *, config: ReleaseConfig) -> Outputs:
    """Turn a model's output into per-row predictions and scores.

    Parameters
    ----------
    output
        What the model returned for the batch.
    config
        The release config (task, threshold, labels, positive class).

    Returns
    -------
    Outputs
        The predictions and scores (None when the model gives no probabilities).

    Raises
    ------
    SchemaError
        When the config does not fit the model: a threshold without probabilities or with
        more than two classes, labels of the wrong length, an unknown positive class.
    ModelError
        When the output is inconsistent: probabilities not ``(rows, classes)``, a
        prediction outside the model's classes.
    """
    predictions = np.asarray(output.predictions)
    if predictions.ndim == 2 and predictions.shape[1] == 1:
        predictions = predictions[:, 0]
    has_classes = output.probabilities is not None or output.classes is not None
    task = config.task or ("classification" if has_classes else "regression")
    if task == "regression":
        if config.threshold is not None or config.labels is not None:
            raise SchemaError(
                "the release config sets threshold or labels but the model returns neither "
                "class probabilities nor classes: set `task: classification` with a "
                "classifier, or remove threshold and labels"
            )
        return Outputs(predictions=predictions, scores=None)

    probabilities = None
    if output.probabilities is not None:
        probabilities = np.asarray(output.probabilities, dtype=np.float64)
        if probabilities.ndim != 2 or probabilities.shape[0] != len(predictions):
            raise ModelError(
                f"Model returned probabilities of shape {probabilities.shape} for "
                f"{len(predictions)} rows: expected (rows, classes)"
            )
    classes: Array | None = None
    if output.classes is not None:
        classes = np.asarray(output.classes)
    elif probabilities is not None:
        classes = np.arange(probabilities.shape[1])
    if probabilities is not None and classes is not None and len(classes) != probabilities.shape[1]:
        raise ModelError(
            f"Model returned {probabilities.shape[1]} probability columns but "
            f"{len(classes)} classes {_show_classes(classes)}: they must match"
        )
    labels = None if config.labels is None else np.asarray(config.labels, dtype=object)
    if labels is not None and classes is not None and len(labels) != len(classes):
        raise SchemaError(
            f"the release config has {len(labels)} labels {config.labels!r} but the model has "
            f"{len(classes)} classes {_show_classes(classes)}: give one label per class, in "
            "the model's class order"
        )

    if probabilities is None or classes is None:
        if config.threshold is not None:
            raise SchemaError(
                "the release config sets a threshold but the model returns no class "
                "probabilities: remove threshold or use a model with probabilities"
            )
        if labels is None:
            return Outputs(predictions=predictions, scores=None)
        if classes is not None:
            idx = _positions(predictions, classes)
        else:
            idx = _integer_positions(predictions, len(labels))
        return Outputs(predictions=labels[idx], scores=None)

    names = labels if labels is not None else classes
    final: Array
    if len(classes) == 2:
        positive = _positive_index(config, classes)
        scores = probabilities[:, positive].copy()
        if config.threshold is not None:
            final = names[np.where(scores >= config.threshold, positive, 1 - positive)]
        elif labels is None:
            final = predictions
        else:
            final = labels[_positions(predictions, classes)]
    else:
        if config.threshold is not None:
            raise SchemaError(
                f"the release config sets a threshold but the model has {len(classes)} classes "
                f"{_show_classes(classes)}: a threshold applies to binary classifiers; remove it"
            )
        idx = _positions(predictions, classes)
        scores = probabilities[np.arange(len(idx)), idx]
        final = predictions if labels is None else labels[idx]
    return Outputs(
        predictions=final,
        scores=scores,
        probabilities=probabilities,
        classes=_class_names(names),
    )
