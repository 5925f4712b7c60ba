"""Model runtimes: a release's model files become a `LoadedModel` that scores a batch.

`load_model` loads one of the `FLAVORS` (sklearn, lightgbm, xgboost, onnx, torch,
python) into an object whose ``predict(matrix)`` returns a `ModelOutput`: one prediction
per row, plus class probabilities and labels for classifiers. Each flavor's library is
imported only when a model of that flavor is loaded, and a missing one raises
`headrace.errors.DependencyMissingError` with the pip command. `detect_flavor` guesses a
flavor from a file name. `ConstantModel` and `FailingModel` are fakes for tests.
"""

from __future__ import annotations

from headrace.runtimes.base import LoadedModel, ModelOutput, RuntimeLoader
from headrace.runtimes.loader import FLAVORS, detect_flavor, load_model
from headrace.runtimes.testing import ConstantModel, FailingModel

__all__ = [
    "FLAVORS",
    "ConstantModel",
    "FailingModel",
    "LoadedModel",
    "ModelOutput",
    "RuntimeLoader",
    "detect_flavor",
    "load_model",
]
