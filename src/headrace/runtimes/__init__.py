"""Model runtimes: a release's model files become a `LoadedModel` that scores a batch.

`load_model` loads one of the `FLAVORS` (sklearn, lightgbm, xgboost, onnx, torch,
python) into an object whose ``predict(matrix)`` returns a `ModelOutput`: one prediction
per row, plus class probabilities and labels for classifiers. Each flavor's library is
imported only when a model of that flavor is loaded, and a missing one raises
`headrace.errors.DependencyMissingError` with the pip command. `detect_flavor` guesses a
flavor from a file name. A flavor's model also reads its own signature
(`NativeSignature`: column names, count, outputs) and scores a DataFrame as it was
fitted (`SignedModel`), for the checks at registration. `ConstantModel` and
`FailingModel` are fakes for tests.

`ModelPool` keeps many loaded models under a memory budget: each load's footprint is
measured (`measure_footprint`), the least recently used are evicted to make room, and
concurrent requests for a model that is loading share its one load; `import_runtime`
imports a model's libraries beforehand so that its footprint is its own memory.
"""

from __future__ import annotations

from headrace.runtimes.base import (
    LoadedModel,
    ModelOutput,
    NativeSignature,
    RuntimeLoader,
    SignedModel,
)
from headrace.runtimes.footprint import measure_footprint, object_graph_bytes, resident_bytes
from headrace.runtimes.imports import import_runtime, pickle_modules
from headrace.runtimes.loader import FLAVORS, detect_flavor, load_model
from headrace.runtimes.pool import ModelPool, PoolEntry
from headrace.runtimes.testing import ConstantModel, FailingModel

__all__ = [
    "FLAVORS",
    "ConstantModel",
    "FailingModel",
    "LoadedModel",
    "ModelOutput",
    "ModelPool",
    "NativeSignature",
    "PoolEntry",
    "RuntimeLoader",
    "SignedModel",
    "detect_flavor",
    "import_runtime",
    "load_model",
    "measure_footprint",
    "object_graph_bytes",
    "pickle_modules",
    "resident_bytes",
]
