"""The xgboost flavor loads a JSON/UBJSON Booster and answers like the trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from headrace.errors import ModelLoadError
from headrace.runtimes import load_model

PARAMS: dict[str, Any] = {"n_estimators": 25, "max_depth": 3, "n_jobs": 1}


@pytest.mark.parametrize("entry", ["model.json", "model.ubj"])
def test_binary_classifier_matches_xgboost(
    binary_data: Any, data_seed: int, model_dir: Path, entry: str
) -> None:
    x, y = binary_data
    model = xgb.XGBClassifier(**PARAMS, random_state=data_seed).fit(x, y)
    model.save_model(model_dir / entry)

    loaded = load_model("xgboost", model_dir=model_dir, entry=entry)
    out = loaded.predict(x)

    assert loaded.flavor == "xgboost"
    np.testing.assert_array_equal(out.predictions, model.predict(x))
    assert out.probabilities is not None
    assert out.probabilities.dtype == np.float64
    np.testing.assert_allclose(out.probabilities, model.predict_proba(x), rtol=1e-6)
    np.testing.assert_array_equal(out.classes, [0, 1])


def test_early_stopping_scores_with_the_best_iteration(
    binary_data: Any, data_seed: int, model_dir: Path
) -> None:
    x, y = binary_data
    model = xgb.XGBClassifier(
        n_estimators=200, max_depth=3, learning_rate=0.5, early_stopping_rounds=3, n_jobs=1
    )
    model.set_params(random_state=data_seed)
    model.fit(x[:200], y[:200], eval_set=[(x[200:], y[200:])], verbose=False)
    assert model.best_iteration < 199  # early stopping did cut the model short
    model.save_model(model_dir / "model.json")

    out = load_model("xgboost", model_dir=model_dir, entry="model.json").predict(x)

    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities, model.predict_proba(x), rtol=1e-6)


@pytest.mark.parametrize("objective", ["multi:softprob", "multi:softmax"])
def test_multiclass_gives_a_probability_matrix(
    multiclass_data: Any, data_seed: int, model_dir: Path, objective: str
) -> None:
    x, y = multiclass_data
    model = xgb.XGBClassifier(**PARAMS, objective=objective, random_state=data_seed).fit(x, y)
    model.save_model(model_dir / "model.json")

    out = load_model("xgboost", model_dir=model_dir, entry="model.json").predict(x)

    np.testing.assert_array_equal(out.predictions, model.predict(x))
    assert out.probabilities is not None
    assert out.probabilities.shape == (300, 3)
    np.testing.assert_allclose(out.probabilities, model.predict_proba(x), rtol=1e-5)
    np.testing.assert_array_equal(out.classes, [0, 1, 2])


def test_regressor_gives_values(regression_data: Any, data_seed: int, model_dir: Path) -> None:
    x, y = regression_data
    model = xgb.XGBRegressor(**PARAMS, random_state=data_seed).fit(x, y)
    model.save_model(model_dir / "model.ubj")

    out = load_model("xgboost", model_dir=model_dir, entry="model.ubj").predict(x)

    np.testing.assert_allclose(out.predictions, model.predict(x), rtol=1e-6)
    assert out.probabilities is None


def test_json_that_is_not_a_model(model_dir: Path) -> None:
    (model_dir / "model.json").write_text('{"threshold": 0.5}')

    with pytest.raises(ModelLoadError) as info:
        load_model("xgboost", model_dir=model_dir, entry="model.json")

    message = str(info.value)
    assert "with the xgboost flavor: it looks like a JSON document" in message
    assert "model.save_model('model.json')" in message
    assert "Stack trace" not in message
    assert "\n" not in message


def test_lightgbm_model_given_as_xgboost_names_the_right_flavor(
    binary_data: Any, model_dir: Path
) -> None:
    import lightgbm as lgb

    x, y = binary_data
    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y)
    model.booster_.save_model(model_dir / "model.json")

    with pytest.raises(ModelLoadError, match=r"a LightGBM text model\. .* --flavor lightgbm"):
        load_model("xgboost", model_dir=model_dir, entry="model.json")


def test_truncated_model_keeps_xgboosts_reason_without_its_stack_trace(
    binary_data: Any, model_dir: Path
) -> None:
    x, y = binary_data
    xgb.XGBClassifier(n_estimators=5).fit(x, y).save_model(model_dir / "full.json")
    data = (model_dir / "full.json").read_bytes()
    (model_dir / "model.json").write_bytes(data[: len(data) // 2])

    with pytest.raises(ModelLoadError) as info:
        load_model("xgboost", model_dir=model_dir, entry="model.json")

    message = str(info.value)
    assert "with the xgboost flavor: Expecting:" in message  # xgboost's words, log prefix dropped
    assert "may be truncated" in message
    assert "\n" not in message
