from __future__ import annotations

import numpy as np
import pytest

from headrace.errors import ModelError, SchemaError
from headrace.inference.postprocess import postprocess
from headrace.release.config import ReleaseConfig
from headrace.runtimes.base import ModelOutput

PROBA = np.array([[0.9, 0.1], [0.4, 0.6], [0.25, 0.75]])


def binary(
    predictions: list[int] | None = None, classes: list[object] | None = None
) -> ModelOutput:
    preds = np.array(predictions if predictions is not None else [0, 1, 1])
    return ModelOutput(
        predictions=preds,
        probabilities=PROBA,
        classes=np.array(classes) if classes is not None else np.array([0, 1]),
    )


def test_binary_score_is_positive_probability_and_prediction_is_the_models() -> None:
    out = postprocess(binary(), config=ReleaseConfig())
    np.testing.assert_array_equal(out.scores, [0.1, 0.6, 0.75])
    assert out.scores is not None and out.scores.dtype == np.float64
    assert out.predictions.tolist() == [0, 1, 1]


def test_binary_threshold() -> None:
    out = postprocess(binary(), config=ReleaseConfig(threshold=0.7))
    assert out.predictions.tolist() == [0, 0, 1]
    at_threshold = postprocess(binary(), config=ReleaseConfig(threshold=0.6))
    assert at_threshold.predictions.tolist() == [0, 1, 1]


def test_binary_labels_and_positive_class() -> None:
    config = ReleaseConfig(labels=["legit", "fraud"], threshold=0.5)
    assert postprocess(binary(), config=config).predictions.tolist() == ["legit", "fraud", "fraud"]
    no_threshold = postprocess(binary(), config=ReleaseConfig(labels=["legit", "fraud"]))
    assert no_threshold.predictions.tolist() == ["legit", "fraud", "fraud"]
    # the positive class chosen by label, by class value, and by the class's text
    for positive in ("legit", 0, "0"):
        config = ReleaseConfig(labels=["legit", "fraud"], positive_class=positive, threshold=0.5)
        out = postprocess(binary(), config=config)
        np.testing.assert_array_equal(out.scores, [0.9, 0.4, 0.25])
        assert out.predictions.tolist() == ["legit", "fraud", "fraud"]


def test_string_classes() -> None:
    output = ModelOutput(np.array(["no", "yes", "yes"]), PROBA, np.array(["no", "yes"]))
    out = postprocess(output, config=ReleaseConfig(threshold=0.7))
    assert out.predictions.tolist() == ["no", "no", "yes"]
    labelled = postprocess(output, config=ReleaseConfig(labels=["ok", "bad"]))
    assert labelled.predictions.tolist() == ["ok", "bad", "bad"]
    positive = postprocess(output, config=ReleaseConfig(positive_class="no"))
    np.testing.assert_array_equal(positive.scores, [0.9, 0.4, 0.25])


def test_multiclass() -> None:
    proba = np.array([[0.2, 0.5, 0.3], [0.7, 0.2, 0.1]])
    output = ModelOutput(np.array([5, 3]), proba, np.array([3, 5, 9]))
    out = postprocess(output, config=ReleaseConfig())
    assert out.predictions.tolist() == [5, 3]
    np.testing.assert_array_equal(out.scores, [0.5, 0.7])
    labelled = postprocess(output, config=ReleaseConfig(labels=["a", "b", "c"]))
    assert labelled.predictions.tolist() == ["b", "a"]


def test_probabilities_without_classes_use_indices() -> None:
    output = ModelOutput(np.array([1, 0, 1]), PROBA)
    out = postprocess(output, config=ReleaseConfig(labels=["neg", "pos"]))
    assert out.predictions.tolist() == ["pos", "neg", "pos"]


def test_classifier_without_probabilities() -> None:
    output = ModelOutput(np.array([1, 0]), classes=np.array([0, 1]))
    out = postprocess(output, config=ReleaseConfig(labels=["neg", "pos"]))
    assert out.predictions.tolist() == ["pos", "neg"] and out.scores is None
    bare = ModelOutput(np.array([1.0, 0.0]))
    config = ReleaseConfig(task="classification", labels=["neg", "pos"])
    assert postprocess(bare, config=config).predictions.tolist() == ["pos", "neg"]
    with pytest.raises(ModelError, match="cannot be mapped to the 2 config labels"):
        postprocess(ModelOutput(np.array([2])), config=config)


def test_regression() -> None:
    out = postprocess(ModelOutput(np.array([[1.5], [2.5]])), config=ReleaseConfig())
    assert out.predictions.tolist() == [1.5, 2.5] and out.scores is None
    forced = postprocess(binary(), config=ReleaseConfig(task="regression"))
    assert forced.scores is None and forced.predictions.tolist() == [0, 1, 1]


def test_config_that_does_not_fit_the_model() -> None:
    with pytest.raises(SchemaError, match="sets threshold or labels but the model returns neither"):
        postprocess(ModelOutput(np.array([1.0])), config=ReleaseConfig(threshold=0.5))
    with pytest.raises(SchemaError, match="the model returns no class probabilities"):
        postprocess(
            ModelOutput(np.array([1]), classes=np.array([0, 1])),
            config=ReleaseConfig(threshold=0.5),
        )
    with pytest.raises(SchemaError, match=r"has 3 labels \['a', 'b', 'c'\] but the model has 2"):
        postprocess(binary(), config=ReleaseConfig(labels=["a", "b", "c"]))
    with pytest.raises(SchemaError, match="positive_class 'spam' in the release config"):
        postprocess(binary(), config=ReleaseConfig(positive_class="spam"))
    three = ModelOutput(np.array([0]), np.array([[0.2, 0.3, 0.5]]), np.array([0, 1, 2]))
    with pytest.raises(SchemaError, match="a threshold applies to binary classifiers"):
        postprocess(three, config=ReleaseConfig(threshold=0.5))


def test_inconsistent_model_output() -> None:
    with pytest.raises(
        ModelError, match=r"Model predicted 7, which is not one of its classes \[0, 1\]"
    ):
        postprocess(binary(predictions=[0, 7, 1]), config=ReleaseConfig(labels=["a", "b"]))
    with pytest.raises(ModelError, match="probabilities of shape"):
        postprocess(ModelOutput(np.array([0, 1]), PROBA), config=ReleaseConfig())
    with pytest.raises(ModelError, match="2 probability columns but 3 classes"):
        postprocess(
            ModelOutput(np.array([0, 1, 1]), PROBA, np.array([0, 1, 2])), config=ReleaseConfig()
        )
    mixed = ModelOutput(
        np.array(["a"], dtype=object), np.array([[0.2, 0.3, 0.5]]), np.array([0, 1, 2])
    )
    with pytest.raises(ModelError, match="not one of its classes"):
        postprocess(mixed, config=ReleaseConfig())


def test_every_class_probability_is_handed_on_with_its_name() -> None:
    labelled = postprocess(binary(), config=ReleaseConfig(labels=["legit", "fraud"]))
    assert labelled.classes == ("legit", "fraud")
    np.testing.assert_array_equal(labelled.probabilities, PROBA)
    # the score stays P(positive class), whatever the threshold predicts
    high = postprocess(binary(), config=ReleaseConfig(threshold=0.99))
    assert high.predictions.tolist() == [0, 0, 0] and high.classes == ("0", "1")
    np.testing.assert_array_equal(high.scores, PROBA[:, 1])
    proba = np.array([[0.2, 0.5, 0.3], [0.7, 0.2, 0.1]])
    multi = postprocess(
        ModelOutput(np.array([5, 3]), proba, np.array([3, 5, 9])), config=ReleaseConfig()
    )
    assert multi.classes == ("3", "5", "9")
    np.testing.assert_array_equal(multi.probabilities, proba)
    plain = postprocess(ModelOutput(np.array([1.5, 2.0])), config=ReleaseConfig())
    assert plain.probabilities is None and plain.classes is None
