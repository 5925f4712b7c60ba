"""The onnx flavor runs skl2onnx exports and answers like the scikit-learn model.

onnxruntime computes in float32, so probabilities match to float32 precision (rtol 1e-5).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression, Ridge

from headrace.errors import ModelLoadError
from headrace.runtimes import load_model


def save_onnx(model: Any, x: Any, path: Path, *, zipmap: bool = False) -> None:
    options = {id(model): {"zipmap": zipmap}} if hasattr(model, "classes_") else None
    onx = to_onnx(model, x[:1].astype(np.float32), options=options)
    path.write_bytes(onx.SerializeToString())


@pytest.mark.parametrize("zipmap", [False, True], ids=["tensor", "zipmap"])
def test_binary_classifier_matches_sklearn(binary_data: Any, model_dir: Path, zipmap: bool) -> None:
    x, y = binary_data
    model = LogisticRegression(max_iter=1000).fit(x, y)
    save_onnx(model, x, model_dir / "model.onnx", zipmap=zipmap)

    loaded = load_model("onnx", model_dir=model_dir, entry="model.onnx")
    out = loaded.predict(x)

    assert loaded.flavor == "onnx"
    np.testing.assert_array_equal(out.predictions, model.predict(x))
    assert out.probabilities is not None
    assert out.probabilities.dtype == np.float64
    np.testing.assert_allclose(out.probabilities, model.predict_proba(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out.classes, [0, 1])


@pytest.mark.parametrize("zipmap", [False, True], ids=["tensor", "zipmap"])
def test_multiclass_string_labels_come_from_the_graph(
    multiclass_data: Any, model_dir: Path, zipmap: bool
) -> None:
    x, y = multiclass_data
    labels = np.array(["bronze", "gold", "silver"])[y]
    model = LogisticRegression(max_iter=1000).fit(x, labels)
    save_onnx(model, x, model_dir / "model.onnx", zipmap=zipmap)

    out = load_model("onnx", model_dir=model_dir, entry="model.onnx").predict(x)

    np.testing.assert_array_equal(out.predictions, model.predict(x))
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities, model.predict_proba(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out.classes, ["bronze", "gold", "silver"])


def test_integer_labels_other_than_0_to_k(binary_data: Any, model_dir: Path) -> None:
    x, y = binary_data
    model = LogisticRegression(max_iter=1000).fit(x, np.where(y == 1, 7, 3))
    save_onnx(model, x, model_dir / "model.onnx")

    out = load_model("onnx", model_dir=model_dir, entry="model.onnx").predict(x)

    np.testing.assert_array_equal(out.predictions, model.predict(x))
    np.testing.assert_array_equal(out.classes, [3, 7])


def test_without_the_onnx_package_int_classes_fall_back_to_indices(
    binary_data: Any, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = binary_data
    model = LogisticRegression(max_iter=1000).fit(x, y)
    save_onnx(model, x, model_dir / "model.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)

    out = load_model("onnx", model_dir=model_dir, entry="model.onnx").predict(x)

    np.testing.assert_array_equal(out.classes, [0, 1])
    np.testing.assert_array_equal(out.predictions, model.predict(x))


def test_without_the_onnx_package_string_classes_need_the_option(
    multiclass_data: Any, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = multiclass_data
    names = ["bronze", "gold", "silver"]
    model = LogisticRegression(max_iter=1000).fit(x, np.array(names)[y])
    save_onnx(model, x, model_dir / "model.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)

    with pytest.raises(ModelLoadError, match=r"class labels are strings .* pip install onnx"):
        load_model("onnx", model_dir=model_dir, entry="model.onnx")
    out = load_model(
        "onnx", model_dir=model_dir, entry="model.onnx", options={"classes": names}
    ).predict(x)
    np.testing.assert_array_equal(out.classes, names)


def test_regressor_has_one_output_of_values(regression_data: Any, model_dir: Path) -> None:
    x, y = regression_data
    model = Ridge(alpha=0.5).fit(x, y)
    save_onnx(model, x, model_dir / "model.onnx")

    out = load_model("onnx", model_dir=model_dir, entry="model.onnx").predict(x)

    assert out.predictions.shape == (300,)
    assert out.predictions.dtype == np.float64
    # float32 arithmetic: values near zero need an absolute tolerance too.
    np.testing.assert_allclose(out.predictions, model.predict(x), rtol=1e-5, atol=1e-4)
    assert out.probabilities is None


def test_text_file_is_not_an_onnx_model(model_dir: Path) -> None:
    (model_dir / "model.onnx").write_text("hello world\n")

    with pytest.raises(ModelLoadError) as info:
        load_model("onnx", model_dir=model_dir, entry="model.onnx")

    message = str(info.value)
    assert f"Cannot load '{model_dir / 'model.onnx'}' with the onnx flavor" in message
    assert "it looks like text starting with 'hello world'" in message
    assert "Register it with the right --flavor" in message
    assert "ONNXRuntimeError" not in message


def test_sklearn_pickle_given_as_onnx_names_the_right_flavor(
    binary_data: Any, model_dir: Path
) -> None:
    import joblib

    x, y = binary_data
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), model_dir / "model.onnx")

    with pytest.raises(ModelLoadError, match=r"a pickle file\. Register it with --flavor sklearn"):
        load_model("onnx", model_dir=model_dir, entry="model.onnx")
