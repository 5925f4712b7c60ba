"""Issue 9, code that ships with the model: a python-flavor directory (code, weights, a
requirements list) is one release, imported from the release's verified copy; it scores in a
fresh process after its source directory is gone."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from support.cli import make_runner

WRAPPER = textwrap.dedent(
    """
    from pathlib import Path

    import joblib

    from .features import prepare


    class Model:
        def __init__(self):
            self.estimator = joblib.load(Path(__file__).parent / "weights" / "model.pkl")
            self.classes_ = self.estimator.classes_

        def predict(self, matrix):
            return self.estimator.predict(prepare(matrix))

        def predict_proba(self, matrix):
            return self.estimator.predict_proba(prepare(matrix))
    """
)
FEATURES = textwrap.dedent(
    """
    import numpy as np


    def prepare(matrix):
        x = np.asarray(matrix, dtype=np.float64)
        return np.column_stack([x, x[:, 0] * x[:, 1]])
    """
)


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, pd.DataFrame, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    source = tmp_path / "src"
    (source / "weights").mkdir(parents=True)
    rng = np.random.default_rng(8)
    frame = pd.DataFrame(rng.normal(size=(300, 2)), columns=["a", "b"])
    label = (frame["a"] * frame["b"] > 0).astype(int)
    x = frame.to_numpy()
    estimator = LogisticRegression().fit(np.column_stack([x, x[:, 0] * x[:, 1]]), label)
    joblib.dump(estimator, source / "weights" / "model.pkl")
    (source / "wrapper.py").write_text(WRAPPER)
    (source / "features.py").write_text(FEATURES)
    (source / "requirements.txt").write_text("scikit-learn>=1.0\nnumpy\n")
    frame.to_parquet(tmp_path / "train.parquet")
    expected = estimator.predict(np.column_stack([x, x[:, 0] * x[:, 1]]))
    return source, frame, expected


def test_a_code_directory_scores_after_its_source_is_deleted(
    tmp_path: Path, bundle: tuple[Path, pd.DataFrame, np.ndarray]
) -> None:
    source, frame, expected = bundle
    run = make_runner(tmp_path / "home", tmp_path, actor="code@test", ok=False)
    registered = run(
        "register",
        str(source),
        "--name",
        "wrapped",
        "--flavor",
        "python",
        "--entry",
        "wrapper:Model",
        "--data",
        str(tmp_path / "train.parquet"),
    )
    assert registered.returncode == 0, registered.stderr
    shutil.rmtree(source)
    frame[["b", "a"]].to_csv(tmp_path / "input.csv", index=False)

    scored = run(
        "predict",
        "wrapped:1",
        "--input",
        str(tmp_path / "input.csv"),
        "--output",
        str(tmp_path / "out.csv"),
    )
    assert scored.returncode == 0, scored.stderr
    got = pd.read_csv(tmp_path / "out.csv")["prediction"].to_numpy()
    assert list(got) == list(expected)

    shown = run("releases", "show", "wrapped:1", "--json")
    assert shown.returncode == 0, shown.stderr
    model = json.loads(shown.stdout)["manifest"]["model"]
    assert model["entry"] == "wrapper:Model"
    assert sorted(f["path"] for f in model["files"]) == [
        "features.py",
        "requirements.txt",
        "weights/model.pkl",
        "wrapper.py",
    ]
    assert all(len(f["sha256"]) == 64 for f in model["files"])


def test_the_entry_file_alone_is_refused_when_the_model_reads_its_siblings(
    tmp_path: Path,
    bundle: tuple[Path, pd.DataFrame, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: registered, verify passed against the source directory, predict failed."""
    from headrace.cli.main import main

    source, _, _ = bundle
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "register",
                f"{source / 'wrapper.py'}:Model",
                "--name",
                "lonely",
                "--data",
                str(tmp_path / "train.parquet"),
            ]
        )
    assert exit_info.value.code == 1
    assert "register the directory" in capsys.readouterr().err


def test_unmet_requirements_refuse_the_registration(
    tmp_path: Path,
    bundle: tuple[Path, pd.DataFrame, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from headrace.cli.main import main

    source, _, _ = bundle
    (source / "requirements.txt").write_text("scikit-learn>=1.0\nnot-a-real-package-xyz>=2\n")
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "register",
                str(source),
                "--name",
                "needy",
                "--flavor",
                "python",
                "--entry",
                "wrapper.py:Model",
                "--data",
                str(tmp_path / "train.parquet"),
            ]
        )
    assert exit_info.value.code == 1
    assert "not-a-real-package-xyz>=2 (not installed)" in capsys.readouterr().err
