"""The ``sklearn`` flavor: a fitted estimator saved with joblib or pickle.

Any object with ``predict`` loads (a scikit-learn estimator or pipeline, or a wrapper such
as ``LGBMClassifier``); when it also has ``predict_proba`` and ``classes_`` the output
carries class probabilities. joblib, and scikit-learn for the pickled classes, are
imported only when a model is loaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import DependencyMissingError, ModelLoadError
from headrace.runtimes._common import entry_path, import_optional, not_a_model, real_names
from headrace.runtimes.base import LoadedModel, ModelOutput, NativeSignature
from headrace.types import Array, Matrix

__all__ = ["EstimatorModel", "load"]

_NO_NAMES = "X does not have valid feature names"

# Modules a pickle may need that one of our extras installs.
_EXTRAS = {
    "sklearn": ("scikit-learn", "sklearn"),
    "lightgbm": ("lightgbm", "lightgbm"),
    "xgboost": ("xgboost", "xgboost"),
}


class EstimatorModel:
    """A `LoadedModel` over any object with ``predict`` (and maybe ``predict_proba``).

    Parameters
    ----------
    estimator
        The fitted object. Probabilities are returned only when it has both
        ``predict_proba`` and a 1-D ``classes_``.
    flavor
        The flavor to report (``sklearn``, or ``python`` for a class in a user file).
    """

    __slots__ = ("_classes", "_columns", "_estimator", "_proba", "flavor")

    def __init__(self, estimator: Any, *, flavor: str) -> None:
        self.flavor = flavor
        self._estimator = estimator
        self._proba: Any = None
        self._classes: Array | None = None
        # The names it was fitted with, when it was fitted on a DataFrame.
        names = _fitted_names(estimator)
        self._columns: tuple[str, ...] | None = None if names is None else tuple(names)
        # hasattr, not getattr: scikit-learn's `available_if` hides predict_proba by raising
        # AttributeError (an SVC without probability=True, a pipeline ending in a regressor).
        if hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_"):
            classes = np.asarray(estimator.classes_)
            if classes.ndim == 1:  # multi-output classifiers have a list of arrays
                self._proba = estimator.predict_proba
                self._classes = classes

    def predict(self, matrix: Matrix) -> ModelOutput:
        """Score the whole batch with one model call.

        A classifier's label is the most probable class, taken from ``predict_proba``
        rather than a second ``predict`` call: half the cost for forests and boosted
        trees, and the label always agrees with the score (an SVC's own ``predict`` can
        disagree with its Platt-scaled probabilities).
        """
        if self._columns is not None and isinstance(matrix, np.ndarray):
            # A model fitted on a DataFrame gets a numpy matrix only when its signature is
            # all-numeric and it does not select columns by name; the columns are in its
            # fitted order (the release's signature saw to that), so scikit-learn's "X does
            # not have valid feature names" says nothing here. Wrapping the matrix in a
            # DataFrame to silence it would cost ~2 ms per 512 rows in scikit-learn's
            # validation (0.4 ms for the whole numpy call; benchmarks/model_input_paths.py).
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_NO_NAMES, category=UserWarning)
                return self._score(matrix)
        return self._score(matrix)

    def reference_predict(self, frame: Any) -> ModelOutput:
        """Score a DataFrame as the estimator was fitted: by name when it kept names."""
        if self._columns is None:
            return self._score(frame.to_numpy())
        return self._score(frame)

    def signature(self) -> NativeSignature:
        """``feature_names_in_`` / ``n_features_in_`` (a Pipeline answers for its first step)."""
        names = self._columns
        count = getattr(self._estimator, "n_features_in_", None)
        outputs: list[tuple[str, str, tuple[int | None, ...] | None]] = [
            ("predictions", "label" if self._classes is not None else "value", (None,))
        ]
        if self._classes is not None:
            outputs.append(("probabilities", "float64", (None, len(self._classes))))
        return NativeSignature(
            names=names,
            n_features=int(count) if isinstance(count, int | np.integer) else None,
            frame=names is not None,
            outputs=tuple(outputs),
            classes=None if self._classes is None else tuple(self._classes.tolist()),
            source=f"{self.flavor} feature_names_in_" if names else f"{self.flavor} n_features_in_",
        )

    def _score(self, data: Any) -> ModelOutput:
        if self._proba is None or self._classes is None:
            return ModelOutput(predictions=np.asarray(self._estimator.predict(data)))
        probabilities = np.asarray(self._proba(data), dtype=np.float64)
        predictions = self._classes[np.argmax(probabilities, axis=1)]
        return ModelOutput(
            predictions=predictions, probabilities=probabilities, classes=self._classes
        )

    def __repr__(self) -> str:
        return f"EstimatorModel({type(self._estimator).__name__}, flavor={self.flavor!r})"


def load(model_dir: Path, entry: str, options: dict[str, Any]) -> LoadedModel:
    """Load a joblib or pickle file holding a fitted estimator.

    Parameters
    ----------
    model_dir
        The directory holding the release's model files.
    entry
        The file name inside `model_dir`, e.g. ``model.joblib``.
    options
        Unused; accepted for the `RuntimeLoader` contract.

    Raises
    ------
    ModelLoadError
        The file is missing, not a pickle, or holds an object without ``predict``.
    DependencyMissingError
        joblib, or a package the pickle refers to, is not installed.
    """
    path = entry_path(model_dir, entry=entry, flavor="sklearn")
    joblib = import_optional("joblib", package="joblib", extra="sklearn", flavor="sklearn")
    try:
        # Unpickling runs code from the file: the release layer checked its sha256 first.
        estimator = joblib.load(path)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in _EXTRAS:
            package, extra = _EXTRAS[top]
            raise DependencyMissingError(package, extra, "the sklearn flavor") from exc
        raise ModelLoadError(
            f"Cannot load '{path}' with the sklearn flavor: the pickle needs the module "
            f"'{exc.name}', which is not installed. Install it where the model is served."
        ) from exc
    except Exception as exc:
        raise not_a_model(path, flavor="sklearn", exc=exc) from exc
    if not callable(getattr(estimator, "predict", None)):
        raise not_a_model(
            path, flavor="sklearn", looks_like=f"a pickle of a {_kind(estimator)}, not a model"
        )
    _check_fitted(estimator, path=path)
    return EstimatorModel(estimator, flavor="sklearn")


def _fitted_names(estimator: Any) -> list[str] | None:
    """The column names the estimator was fitted with, or None (fitted on an array)."""
    try:
        names = getattr(estimator, "feature_names_in_", None)
    except Exception:  # a property of an odd meta-estimator may raise anything
        return None
    if names is None:
        return None
    listed = real_names(np.asarray(names).tolist())
    return None if listed is None else list(listed)


def _kind(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _check_fitted(estimator: Any, *, path: Path) -> None:
    if not type(estimator).__module__.startswith("sklearn."):
        return
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise ModelLoadError(
            f"Cannot load '{path}' with the sklearn flavor: the {type(estimator).__name__} in it "
            "was never fitted. Call fit() before joblib.dump()."
        ) from exc
    except Exception:
        return  # a check that cannot run (odd meta-estimator) must not block a usable model
