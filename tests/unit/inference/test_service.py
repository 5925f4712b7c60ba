from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from headrace.errors import ModelError, SchemaError
from headrace.inference.service import InferenceService
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.base import LoadedModel, ModelOutput
from headrace.types import Matrix

SCHEMA = Schema(
    fields=[
        Field(name="feature0", type="float"),
        Field(name="feature1", type="float"),
        Field(name="note", type="string", required=False, nullable=True),
    ]
)
INPUTS = ["feature0", "feature1"]


class SklearnModel:
    """A LoadedModel over a fitted classifier."""

    flavor = "sklearn"

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.calls = 0

    def predict(self, matrix: Matrix) -> ModelOutput:
        self.calls += 1
        return ModelOutput(
            predictions=self.estimator.predict(matrix),
            probabilities=self.estimator.predict_proba(matrix),
            classes=self.estimator.classes_,
        )


class PoisonModel:
    """Raises when any row matches `poison`; otherwise delegates to `inner`."""

    flavor = "testing"

    def __init__(self, inner: LoadedModel, poison: Callable[[Matrix], np.ndarray]) -> None:
        self.inner = inner
        self.poison = poison
        self.calls = 0

    def predict(self, matrix: Matrix) -> ModelOutput:
        self.calls += 1
        bad = np.flatnonzero(self.poison(matrix))
        if bad.size:
            raise RuntimeError(f"cannot score value {matrix[bad[0], 0]}")
        return self.inner.predict(matrix)


class FlakyModel:
    """Fails its first `failures` calls, then answers."""

    flavor = "testing"

    def __init__(self, inner: LoadedModel, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def predict(self, matrix: Matrix) -> ModelOutput:
        self.calls += 1
        if self.calls <= self.failures:
            raise TimeoutError("GPU busy")
        return self.inner.predict(matrix)


class ShortModel:
    flavor = "testing"

    def predict(self, matrix: Matrix) -> ModelOutput:
        return ModelOutput(predictions=np.zeros(len(matrix) - 1))


@pytest.fixture(scope="module")
def classifier() -> LogisticRegression:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return LogisticRegression().fit(x, y)


def service(model: LoadedModel, **config: Any) -> InferenceService:
    return InferenceService(
        model,
        schema=SCHEMA,
        inputs=INPUTS,
        config=ReleaseConfig(**config),
        release="fraud:3",
        release_digest="sha256:abc",
    )


def batch(n: int, seed: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray]:
    x = np.random.default_rng(seed).uniform(-1, 1, size=(n, 2))
    return {"feature0": x[:, 0].copy(), "feature1": x[:, 1].copy()}, x


def test_predictions_match_the_model(classifier: LogisticRegression) -> None:
    columns, x = batch(50)
    result = service(SklearnModel(classifier)).infer(columns, n_rows=50)
    assert result.rows.tolist() == list(range(50)) and result.rows.dtype == np.int64
    np.testing.assert_allclose(result.scores, classifier.predict_proba(x)[:, 1])  # type: ignore[arg-type]
    np.testing.assert_array_equal(result.predictions, classifier.predict(x))
    assert result.rejections == [] and result.n_rows == 50
    assert (result.release, result.release_digest) == ("fraud:3", "sha256:abc")


def test_threshold_and_labels(classifier: LogisticRegression) -> None:
    columns, x = batch(20)
    result = service(SklearnModel(classifier), threshold=0.9, labels=["legit", "fraud"]).infer(
        columns, n_rows=20
    )
    expected = np.where(classifier.predict_proba(x)[:, 1] >= 0.9, "fraud", "legit")
    assert result.predictions.tolist() == expected.tolist()


def test_invalid_rows_are_rejected_and_the_rest_predicted(classifier: LogisticRegression) -> None:
    records: list[Any] = [
        {"feature0": 0.1, "feature1": 0.2},
        {"feature0": "0.1", "feature1": 0.2},
        {"feature1": 0.2},
        [1, 2],
        {"feature0": 0.5, "feature1": -0.5, "note": "hello", "unknown": 1},
    ]
    result = service(SklearnModel(classifier)).infer_records(records)
    assert result.rows.tolist() == [0, 4]
    assert [(r.row, r.stage, r.field, r.reason) for r in result.rejections] == [
        (1, "validate", "feature0", "Expected `float`, got `str` - at `$.feature0`"),
        (2, "validate", "feature0", "Missing required field `feature0`"),
        (3, "decode", None, "Expected `object`, got `array` - at `$`"),
    ]
    assert result.n_predicted + result.n_rejected == len(records) == result.n_rows


def test_all_invalid_does_not_call_the_model(classifier: LogisticRegression) -> None:
    model = SklearnModel(classifier)
    result = service(model).infer_records([{"feature0": None}, {}])
    assert model.calls == 0 and result.n_predicted == 0 and result.n_rejected == 2
    empty = service(model).infer({}, n_rows=0)
    assert empty.n_predicted == 0 and empty.rejections == [] and model.calls == 0


def test_one_poisonous_row_in_512_is_isolated(classifier: LogisticRegression) -> None:
    columns, x = batch(512)
    columns["feature0"][137] = 5.0
    x[137, 0] = 5.0
    model = PoisonModel(SklearnModel(classifier), lambda m: m[:, 0] > 2.0)
    result = service(model).infer(columns, n_rows=512)
    assert result.n_predicted == 511
    assert 137 not in result.rows.tolist() and len(set(result.rows.tolist())) == 511
    [rejection] = result.rejections
    assert rejection.row == 137 and rejection.stage == "predict" and rejection.field is None
    assert rejection.reason == "Model raised RuntimeError: cannot score value 5.0"
    good = np.delete(np.arange(512), 137)
    np.testing.assert_allclose(result.scores, classifier.predict_proba(x[good])[:, 1])  # type: ignore[arg-type]
    np.testing.assert_array_equal(result.rows, good)
    assert model.calls <= 2 + 2 * 10  # the retry, then two calls per level of bisection


def test_several_poisonous_rows_and_validation_rejections(classifier: LogisticRegression) -> None:
    columns, _ = batch(100)
    values = columns["feature0"].astype(object)
    for i in (3, 50, 51, 99):
        values[i] = 9.0
    values[10] = "bad"
    model = PoisonModel(SklearnModel(classifier), lambda m: m[:, 0] > 2.0)
    result = service(model).infer({"feature0": values, "feature1": columns["feature1"]}, n_rows=100)
    assert [(r.row, r.stage) for r in result.rejections] == [
        (3, "predict"),
        (10, "validate"),
        (50, "predict"),
        (51, "predict"),
        (99, "predict"),
    ]
    assert result.n_predicted == 95
    assert not set(result.rows.tolist()) & {3, 10, 50, 51, 99}


def test_every_row_poisonous() -> None:
    columns, _ = batch(8)
    model = PoisonModel(ShortModel(), lambda m: np.ones(len(m), dtype=bool))
    result = service(model).infer(columns, n_rows=8)
    assert result.n_predicted == 0 and result.scores is None
    assert [r.row for r in result.rejections] == list(range(8))
    single = service(PoisonModel(ShortModel(), lambda m: np.ones(len(m), dtype=bool)))
    one = single.infer({"feature0": np.ones(1), "feature1": np.ones(1)}, n_rows=1)
    assert [r.stage for r in one.rejections] == ["predict"]


def test_transient_failure_is_retried_once(classifier: LogisticRegression) -> None:
    columns, _ = batch(16)
    flaky = FlakyModel(SklearnModel(classifier), failures=1)
    result = service(flaky).infer(columns, n_rows=16)
    assert result.n_predicted == 16 and result.rejections == [] and flaky.calls == 2


def test_failing_twice_bisects(classifier: LogisticRegression) -> None:
    columns, _ = batch(16)
    flaky = FlakyModel(SklearnModel(classifier), failures=2)
    result = service(flaky).infer(columns, n_rows=16)
    assert result.n_predicted == 16 and result.rejections == []
    assert result.rows.tolist() == list(range(16))


def test_wrong_row_count_is_a_model_error() -> None:
    columns, _ = batch(4)
    with pytest.raises(ModelError, match=r"fraud:3 \(testing\) returned 3 predictions for 4 rows"):
        service(ShortModel()).infer(columns, n_rows=4)


def test_model_error_from_the_model_is_isolated(classifier: LogisticRegression) -> None:
    class PickyError(ModelError):
        pass

    inner = SklearnModel(classifier)

    class Picky:
        flavor = "testing"

        def predict(self, matrix: Matrix) -> ModelOutput:
            if (matrix[:, 0] > 2).any():
                raise PickyError("no")
            return inner.predict(matrix)

    columns, _ = batch(4)
    columns["feature0"][1] = 3.0
    result = service(Picky()).infer(columns, n_rows=4)
    assert [r.reason for r in result.rejections] == ["Model raised PickyError: no"]


def test_long_exception_messages_are_shortened() -> None:
    class Loud:
        flavor = "testing"

        def predict(self, matrix: Matrix) -> ModelOutput:
            raise ValueError("x" * 1000 + "\n" + "y")

    result = service(Loud()).infer({"feature0": np.ones(1), "feature1": np.ones(1)}, n_rows=1)
    [rejection] = result.rejections
    assert len(rejection.reason) <= len("Model raised ValueError: ") + 300
    assert rejection.reason.endswith("...")


def test_regression_has_no_scores() -> None:
    class Linear:
        flavor = "testing"

        def predict(self, matrix: Matrix) -> ModelOutput:
            return ModelOutput(predictions=np.asarray(matrix, dtype=float).sum(axis=1))

    result = service(Linear()).infer({"feature0": np.ones(2), "feature1": np.ones(2)}, n_rows=2)
    assert result.scores is None and result.predictions.tolist() == [2.0, 2.0]


def test_inputs_must_be_schema_fields(classifier: LogisticRegression) -> None:
    with pytest.raises(SchemaError, match=r"model inputs \['zip'\] are not fields of the schema"):
        InferenceService(
            SklearnModel(classifier),
            schema=SCHEMA,
            inputs=["feature0", "zip"],
            config=ReleaseConfig(),
            release="r:1",
            release_digest="d",
        )
