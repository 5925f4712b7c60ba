"""The shipped fakes behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from headrace.runtimes import ConstantModel, FailingModel, LoadedModel


def test_constant_model_answers_every_row() -> None:
    model = ConstantModel(1, probabilities=[0.25, 0.75], classes=["no", "yes"])

    out = model.predict(np.zeros((3, 2)))

    assert isinstance(model, LoadedModel)
    np.testing.assert_array_equal(out.predictions, [1, 1, 1])
    np.testing.assert_allclose(out.probabilities, [[0.25, 0.75]] * 3)
    np.testing.assert_array_equal(out.classes, ["no", "yes"])
    assert model.calls == 1


def test_constant_regressor_has_no_probabilities() -> None:
    out = ConstantModel(2.5).predict(np.zeros((2, 1)))

    np.testing.assert_array_equal(out.predictions, [2.5, 2.5])
    assert out.probabilities is None


def test_failing_model_without_predicate_always_raises() -> None:
    model = FailingModel(message="boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.predict(np.zeros((1, 1)))
    assert (model.calls, model.failures) == (1, 1)


def test_one_poison_row_fails_the_whole_batch() -> None:
    model = FailingModel(fail_when=lambda m: m[:, 0] < 0, model=ConstantModel(7))
    good = np.array([[1.0, 0.0], [2.0, 0.0]])
    poisoned = np.array([[1.0, 0.0], [-1.0, 0.0], [3.0, 0.0], [-5.0, 0.0]])

    np.testing.assert_array_equal(model.predict(good).predictions, [7, 7])
    with pytest.raises(RuntimeError, match=r"poison rows \[1, 3\] of a 4-row batch"):
        model.predict(poisoned)
    # Bisecting down to the good rows works again: that is how the core isolates them.
    np.testing.assert_array_equal(model.predict(poisoned[[0, 2]]).predictions, [7, 7])
    assert (model.calls, model.failures) == (3, 1)


def test_predicate_must_flag_every_row() -> None:
    model = FailingModel(fail_when=lambda m: np.array([True]))

    with pytest.raises(ValueError, match="returned 1 flags for 3 rows"):
        model.predict(np.zeros((3, 1)))
