"""Issue 9, a Python API: the README's example runs as written, and the predictor takes a
DataFrame, a dict of columns or a list of records, every shape agreeing with the model."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("HEADRACE_") and key != "HEADRACE_REQUIRE_SERVICES":
            monkeypatch.delenv(key)
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEADRACE_ACTOR", "api@test")
    return tmp_path / "home"


def _readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("### From Python", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "README has no python block under 'From Python'"
    return found.group(1)


def test_readme_example_runs(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(_readme_example(), str(README), "exec"), {"__name__": "readme"})  # noqa: S102
    assert "prediction" in capsys.readouterr().out
    assert (home / "registry.db").exists()


def test_every_input_shape_agrees_with_the_model(home: Path) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    import headrace

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    release = headrace.register(model, name="cancer", data=x[x.columns[::-1]], alias="champion")
    assert release.ref == "cancer:1"
    assert release.manifest.input_signature is not None
    assert release.manifest.input_signature.names == list(x.columns)

    predictor = headrace.load("cancer@champion")
    assert predictor.release == "cancer:1" and predictor.digest == release.digest
    expected = list(model.predict(x))
    rng = np.random.default_rng(4)
    shuffled = x[list(rng.permutation(x.columns))]
    as_frame = predictor.predict(shuffled)
    as_dict = predictor.predict({c: shuffled[c].tolist() for c in shuffled})
    as_records = predictor(shuffled.to_dict(orient="records"))
    for out in (as_frame, as_dict, as_records):
        assert list(out["prediction"]) == expected
        assert out["error"].isna().all()

    broken = shuffled.head(3).to_dict(orient="records")
    del broken[1]["mean radius"]
    out = predictor.predict(broken)
    assert out["prediction"].isna().tolist() == [False, True, False]
    assert "mean radius" in out["error"][1]


def test_a_live_dataframe_pipeline_with_strings_registers(home: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    import headrace

    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, 200),
            "merchant": rng.choice(["grocery", "travel", "online"], 200),
        }
    )
    y = (frame["merchant"] == "travel").astype(int)
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant"])], remainder="passthrough"
    )
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)
    release = headrace.register(model, name="shops", data=frame, config={"threshold": 0.5})
    signature = release.manifest.input_signature
    assert signature is not None and signature.frame
    out = headrace.load(release.ref).predict({"merchant": ["travel", "grocery"], "amount": [9, 9]})
    expected = model.predict(
        pd.DataFrame({"amount": [9.0, 9.0], "merchant": ["travel", "grocery"]})
    )
    assert list(out["prediction"]) == list(expected)


def test_api_releases_are_verified_and_content_addressed(home: Path) -> None:
    from sklearn.datasets import load_wine
    from sklearn.tree import DecisionTreeClassifier

    import headrace
    from headrace.api import _open_registry

    x, y = load_wine(return_X_y=True, as_frame=True)
    model = DecisionTreeClassifier(random_state=0).fit(x, y)
    first = headrace.register(model, name="wine", data=x)
    again = headrace.register(model, name="wine", data=x)
    assert again.ref == "wine:1" and again.duplicate_of == "wine:1"
    forced = headrace.register(model, name="wine", data=x, allow_duplicate=True)
    assert forced.ref == "wine:2" and forced.duplicate_of is None
    assert forced.content_digest == first.content_digest
    with _open_registry(None, None) as registry:
        # Verified by the contract check: no --force needed to take an alias.
        registry.set_alias("wine", "champion", 2)
        assert registry.get("wine@champion").ref == "wine:2"
