"""The lightgbm flavor loads a Booster text model and answers like the trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from headrace.errors import ModelLoadError
from headrace.runtimes import load_model

PARAMS: dict[str, Any] = {"n_estimators": 25, "num_leaves": 15, "verbose": -1}


def test_binary_classifier_matches_lgbm(binary_data: Any, data_seed: int, model_dir: Path) -> None:
    x, y = binary_data
    model = lgb.LGBMClassifier(**PARAMS, random_state=data_seed).fit(x, y)
    model.booster_.save_model(model_dir / "model.txt")

    loaded = load_model("lightgbm", model_dir=model_dir, entry="model.txt")
    out = loaded.predict(x)

    assert loaded.flavor == "lightgbm"
    np.testing.assert_array_equal(out.predictions, model.predict(x))
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities, model.predict_proba(x), rtol=1e-12)
    np.testing.assert_array_equal(out.classes, [0, 1])


def test_multiclass_gives_a_probability_matrix(
    multiclass_data: Any, data_seed: int, model_dir: Path
) -> None:
    x, y = multiclass_data
    model = lgb.LGBMClassifier(**PARAMS, random_state=data_seed).fit(x, y)
    model.booster_.save_model(model_dir / "model.txt")

    out = load_model("lightgbm", model_dir=model_dir, entry="model.txt").predict(x)

    np.testing.assert_array_equal(out.predictions, model.predict(x))
    assert out.probabilities is not None
    assert out.probabilities.shape == (300, 3)
    np.testing.assert_allclose(out.probabilities, model.predict_proba(x), rtol=1e-12)
    np.testing.assert_array_equal(out.classes, [0, 1, 2])


def test_regression_from_the_native_training_api(
    regression_data: Any, data_seed: int, model_dir: Path
) -> None:
    x, y = regression_data
    params = {"objective": "regression", "num_leaves": 15, "verbose": -1, "seed": data_seed}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=25)
    booster.save_model(model_dir / "model.lgb")

    out = load_model("lightgbm", model_dir=model_dir, entry="model.lgb").predict(x)

    np.testing.assert_allclose(out.predictions, booster.predict(x), rtol=1e-12)
    assert out.probabilities is None


def test_text_that_is_not_a_model(model_dir: Path) -> None:
    (model_dir / "model.txt").write_text("accuracy: 0.93\n")

    with pytest.raises(ModelLoadError) as info:
        load_model("lightgbm", model_dir=model_dir, entry="model.txt")

    message = str(info.value)
    assert message.startswith(f"Cannot load '{model_dir / 'model.txt'}' with the lightgbm flavor")
    assert "text starting with 'accuracy: 0.93'" in message
    assert "booster.save_model" in message


def test_xgboost_model_given_as_lightgbm_names_the_right_flavor(
    binary_data: Any, model_dir: Path
) -> None:
    import xgboost as xgb

    x, y = binary_data
    xgb.XGBClassifier(n_estimators=5).fit(x, y).save_model(model_dir / "model.json")

    with pytest.raises(ModelLoadError, match=r"an XGBoost JSON model\. .* --flavor xgboost"):
        load_model("lightgbm", model_dir=model_dir, entry="model.json")


def test_truncated_model_is_refused_before_lightgbm_sees_it(
    binary_data: Any, data_seed: int, model_dir: Path
) -> None:
    x, y = binary_data
    model = lgb.LGBMClassifier(**PARAMS, random_state=data_seed).fit(x, y)
    text = model.booster_.model_to_string()
    (model_dir / "model.txt").write_text(text[: len(text) // 3])

    # LightGBM itself would abort the process (std::terminate) on this file.
    with pytest.raises(
        ModelLoadError, match=r"with the lightgbm flavor: the file is truncated"
    ) as info:
        load_model("lightgbm", model_dir=model_dir, entry="model.txt")
    assert "\n" not in str(info.value)
