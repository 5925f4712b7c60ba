"""The python flavor imports a user's .py file from the model directory."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from headrace.errors import ModelLoadError
from headrace.runtimes import load_model


def write(model_dir: Path, source: str, name: str = "model.py") -> None:
    (model_dir / name).write_text(textwrap.dedent(source))


@pytest.fixture
def weights(binary_data: Any, model_dir: Path) -> Any:
    """A real logistic regression, trained, whose weights the user's file loads."""
    from sklearn.linear_model import LogisticRegression

    x, y = binary_data
    model = LogisticRegression(max_iter=1000).fit(x, y)
    np.save(model_dir / "coef.npy", np.append(model.intercept_, model.coef_[0]))
    return model


def test_function_returning_predictions_and_probabilities(
    weights: Any, binary_data: Any, model_dir: Path
) -> None:
    write(
        model_dir,
        """
        from pathlib import Path
        import numpy as np

        W = np.load(Path(__file__).with_name("coef.npy"))

        def predict(matrix):
            p = 1 / (1 + np.exp(-(W[0] + matrix @ W[1:])))
            return (p >= 0.5).astype(int), np.column_stack([1 - p, p])
        """,
    )
    x, _ = binary_data

    loaded = load_model("python", model_dir=model_dir, entry="model.py:predict")
    out = loaded.predict(x)

    assert loaded.flavor == "python"
    np.testing.assert_array_equal(out.predictions, weights.predict(x))
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities, weights.predict_proba(x), rtol=1e-10)
    np.testing.assert_array_equal(out.classes, [0, 1])


def test_function_returning_only_predictions(binary_data: Any, model_dir: Path) -> None:
    write(model_dir, "def score(matrix):\n    return matrix[:, 0] * 2.0\n")
    x, _ = binary_data

    out = load_model("python", model_dir=model_dir, entry="model.py:score").predict(x)

    np.testing.assert_allclose(out.predictions, x[:, 0] * 2.0)
    assert out.probabilities is None


def test_class_with_predict_proba_and_classes(
    weights: Any, binary_data: Any, model_dir: Path
) -> None:
    write(
        model_dir,
        """
        from pathlib import Path
        import numpy as np

        class Fraud:
            classes_ = np.array(["legit", "fraud"])

            def __init__(self):
                self.w = np.load(Path(__file__).with_name("coef.npy"))

            def predict_proba(self, matrix):
                p = 1 / (1 + np.exp(-(self.w[0] + matrix @ self.w[1:])))
                return np.column_stack([1 - p, p])

            def predict(self, matrix):
                return self.classes_[self.predict_proba(matrix).argmax(axis=1)]
        """,
    )
    x, _ = binary_data

    out = load_model("python", model_dir=model_dir, entry="model.py:Fraud").predict(x)

    np.testing.assert_array_equal(out.predictions, np.array(["legit", "fraud"])[weights.predict(x)])
    np.testing.assert_allclose(out.probabilities, weights.predict_proba(x), rtol=1e-10)
    np.testing.assert_array_equal(out.classes, ["legit", "fraud"])


def test_module_level_object_with_predict(binary_data: Any, model_dir: Path) -> None:
    write(
        model_dir,
        """
        class _Model:
            def predict(self, matrix):
                return matrix.sum(axis=1)

        model = _Model()
        """,
    )
    x, _ = binary_data

    out = load_model("python", model_dir=model_dir, entry="model.py:model").predict(x)

    np.testing.assert_allclose(out.predictions, x.sum(axis=1))


def test_each_load_runs_the_file_in_a_fresh_module(model_dir: Path) -> None:
    write(
        model_dir,
        """
        import numpy as np
        calls = []

        def predict(matrix):
            calls.append(1)
            return np.full(len(matrix), len(calls))
        """,
    )
    before = set(sys.modules)
    first = load_model("python", model_dir=model_dir, entry="model.py:predict")
    second = load_model("python", model_dir=model_dir, entry="model.py:predict")
    batch = np.zeros((2, 3))

    first.predict(batch)
    np.testing.assert_array_equal(first.predict(batch).predictions, [2, 2])
    np.testing.assert_array_equal(second.predict(batch).predictions, [1, 1])
    assert set(sys.modules) == before  # nothing left behind for eviction to miss


def test_missing_attribute_names_file_attribute_and_what_exists(model_dir: Path) -> None:
    write(model_dir, "def predict(matrix):\n    return matrix[:, 0]\n\nclass Model: ...\n")

    with pytest.raises(ModelLoadError) as info:
        load_model("python", model_dir=model_dir, entry="model.py:predcit")

    message = str(info.value)
    assert f"'{model_dir / 'model.py'}' has no attribute 'predcit'" in message
    assert "(it defines Model, predict)" in message


def test_missing_file_names_the_path(model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"'.*/model/nowhere\.py' does not exist"):
        load_model("python", model_dir=model_dir, entry="nowhere.py:predict")


def test_entry_without_attribute(model_dir: Path) -> None:
    write(model_dir, "def predict(matrix):\n    return matrix[:, 0]\n")

    with pytest.raises(ModelLoadError, match=r"'model\.py' must be 'file\.py:attribute'"):
        load_model("python", model_dir=model_dir, entry="model.py")


def test_import_error_in_the_file_is_a_load_error(model_dir: Path) -> None:
    write(model_dir, "import not_a_real_package_xyz\n")

    with pytest.raises(ModelLoadError, match=r"raised ModuleNotFoundError: No module named"):
        load_model("python", model_dir=model_dir, entry="model.py:predict")


def test_syntax_error_names_the_line(model_dir: Path) -> None:
    write(model_dir, "def predict(matrix)\n    return matrix\n")

    with pytest.raises(ModelLoadError, match=r"SyntaxError: .*line 1"):
        load_model("python", model_dir=model_dir, entry="model.py:predict")


def test_binary_file_is_not_python(model_dir: Path) -> None:
    (model_dir / "model.py").write_bytes(b"\x80\x04\x95" + bytes(40))

    with pytest.raises(ModelLoadError, match=r"looks like a pickle file, not Python source"):
        load_model("python", model_dir=model_dir, entry="model.py:predict")


def test_attribute_that_is_not_callable(model_dir: Path) -> None:
    write(model_dir, "threshold = 0.5\n")

    with pytest.raises(ModelLoadError, match=r"'threshold' is a float, not a function"):
        load_model("python", model_dir=model_dir, entry="model.py:threshold")


def test_class_that_needs_arguments(model_dir: Path) -> None:
    write(model_dir, "class Model:\n    def __init__(self, path):\n        self.path = path\n")

    with pytest.raises(ModelLoadError, match=r"calling Model\(\) raised TypeError"):
        load_model("python", model_dir=model_dir, entry="model.py:Model")


def test_wrong_number_of_predictions_fails_the_batch(model_dir: Path) -> None:
    write(model_dir, "def predict(matrix):\n    return matrix[:1, 0]\n")
    loaded = load_model("python", model_dir=model_dir, entry="model.py:predict")

    with pytest.raises(ValueError, match=r"returned \(1,\) predictions for 3 rows"):
        loaded.predict(np.zeros((3, 2)))


def test_a_dotted_module_entry_imports_its_siblings_relatively(model_dir: Path) -> None:
    """Code that ships with the model: a package in the release, imported from it."""
    (model_dir / "pkg").mkdir()
    write(model_dir, "SCALE = 3\n", name="pkg/__init__.py")
    write(model_dir, "def double(x):\n    return 2 * x\n", name="pkg/helpers.py")
    write(
        model_dir,
        """
        import numpy as np

        from . import SCALE
        from .helpers import double


        class Model:
            def predict(self, matrix):
                return double(np.asarray(matrix)[:, 0]) * SCALE
        """,
        name="pkg/model.py",
    )
    before = set(sys.modules)
    model = load_model("python", model_dir=model_dir, entry="pkg.model:Model")
    np.testing.assert_array_equal(model.predict(np.array([[1.0], [2.0]])).predictions, [6, 12])
    assert set(sys.modules) == before
    assert not list(model_dir.rglob("__pycache__"))  # the verified copy stays as hashed


def test_an_unmet_requirement_is_a_load_error(model_dir: Path) -> None:
    write(model_dir, "def predict(matrix):\n    return matrix[:, 0]\n")
    (model_dir / "requirements.txt").write_text(
        "numpy>=1\n# a comment\nnumpy<1 ; python_version<'3'\n"
    )
    assert load_model("python", model_dir=model_dir, entry="model:predict").flavor == "python"
    (model_dir / "requirements.txt").write_text("numpy<1\n")
    with pytest.raises(ModelLoadError, match=r"numpy<1 \(installed "):
        load_model("python", model_dir=model_dir, entry="model.py:predict")
