"""The sklearn flavor loads what joblib.dump/pickle.dump wrote and answers like the model."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from headrace.errors import ModelLoadError
from headrace.runtimes import LoadedModel, load_model


def test_binary_classifier_matches_sklearn(binary_data: Any, model_dir: Path) -> None:
    x, y = binary_data
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    joblib.dump(model, model_dir / "model.joblib")

    loaded = load_model("sklearn", model_dir=model_dir, entry="model.joblib")
    out = loaded.predict(x)

    assert isinstance(loaded, LoadedModel)
    assert loaded.flavor == "sklearn"
    np.testing.assert_array_equal(out.predictions, model.predict(x))
    assert out.probabilities is not None
    assert out.probabilities.dtype == np.float64
    np.testing.assert_allclose(out.probabilities, model.predict_proba(x))
    np.testing.assert_array_equal(out.classes, [0, 1])


def test_multiclass_with_string_labels_from_a_plain_pickle(
    multiclass_data: Any, data_seed: int, model_dir: Path
) -> None:
    x, y = multiclass_data
    labels = np.array(["bronze", "gold", "silver"])[y]
    model = RandomForestClassifier(n_estimators=20, random_state=data_seed).fit(x, labels)
    with (model_dir / "model.pkl").open("wb") as file:
        pickle.dump(model, file)

    out = load_model("sklearn", model_dir=model_dir, entry="model.pkl").predict(x)

    np.testing.assert_array_equal(out.predictions, model.predict(x))
    assert out.probabilities is not None
    assert out.probabilities.shape == (300, 3)
    np.testing.assert_allclose(out.probabilities, model.predict_proba(x))
    np.testing.assert_array_equal(out.classes, ["bronze", "gold", "silver"])


def test_regressor_has_values_and_no_probabilities(regression_data: Any, model_dir: Path) -> None:
    x, y = regression_data
    model = Ridge(alpha=0.5).fit(x, y)
    joblib.dump(model, model_dir / "model.joblib", compress=3)

    out = load_model("sklearn", model_dir=model_dir, entry="model.joblib").predict(x)

    np.testing.assert_allclose(out.predictions, model.predict(x))
    assert out.probabilities is None
    assert out.classes is None


def test_classifier_without_predict_proba_gives_labels_only(
    binary_data: Any, model_dir: Path
) -> None:
    # SVC hides predict_proba unless probability=True: hasattr() must see that.
    x, y = binary_data
    model = SVC().fit(x, y)
    joblib.dump(model, model_dir / "model.joblib")

    out = load_model("sklearn", model_dir=model_dir, entry="model.joblib").predict(x)

    np.testing.assert_array_equal(out.predictions, model.predict(x))
    assert out.probabilities is None


def test_pickle_of_a_dict_is_not_a_model(model_dir: Path) -> None:
    joblib.dump({"weights": [1, 2, 3]}, model_dir / "model.joblib")

    with pytest.raises(ModelLoadError) as info:
        load_model("sklearn", model_dir=model_dir, entry="model.joblib")

    message = str(info.value)
    assert "model.joblib" in message
    assert "a pickle of a dict, not a model" in message
    assert "joblib.dump(model" in message
    assert "\n" not in message


def test_text_file_is_not_a_pickle(model_dir: Path) -> None:
    (model_dir / "model.pkl").write_text("these are my notes\n")

    with pytest.raises(ModelLoadError, match=r"text starting with 'these are my notes'"):
        load_model("sklearn", model_dir=model_dir, entry="model.pkl")


def test_onnx_file_given_as_sklearn_names_the_right_flavor(
    binary_data: Any, model_dir: Path
) -> None:
    from skl2onnx import to_onnx

    x, y = binary_data
    model = LogisticRegression(max_iter=1000).fit(x, y)
    onx = to_onnx(model, x[:1].astype(np.float32))
    (model_dir / "model.pkl").write_bytes(onx.SerializeToString())

    with pytest.raises(ModelLoadError, match=r"an ONNX model\. Register it with --flavor onnx"):
        load_model("sklearn", model_dir=model_dir, entry="model.pkl")


def test_unfitted_estimator_is_refused(model_dir: Path) -> None:
    joblib.dump(LogisticRegression(), model_dir / "model.joblib")

    with pytest.raises(ModelLoadError, match=r"never fitted\. Call fit\(\) before joblib"):
        load_model("sklearn", model_dir=model_dir, entry="model.joblib")
