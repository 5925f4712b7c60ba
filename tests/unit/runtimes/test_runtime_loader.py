"""load_model dispatches by flavor; detect_flavor guesses one; both fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from headrace.errors import DependencyMissingError, ModelLoadError
from headrace.runtimes import FLAVORS, detect_flavor, load_model

ENTRIES = {
    "sklearn": "model.joblib",
    "lightgbm": "model.txt",
    "xgboost": "model.json",
    "onnx": "model.onnx",
    "torch": "model.pt",
    "python": "model.py:predict",
}
# The module each flavor imports, and the extra that installs it.
LIBRARIES = {
    "sklearn": ("joblib", "sklearn"),
    "lightgbm": ("lightgbm", "lightgbm"),
    "xgboost": ("xgboost", "xgboost"),
    "onnx": ("onnxruntime", "onnx"),
    "torch": ("torch", "torch"),
}


def test_flavors() -> None:
    assert FLAVORS == ("sklearn", "lightgbm", "xgboost", "onnx", "torch", "python")
    assert set(ENTRIES) == set(FLAVORS)


def test_unknown_flavor_lists_the_valid_ones(model_dir: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model("tensorflow", model_dir=model_dir, entry="model.pb")

    message = str(info.value)
    assert "Unknown model flavor 'tensorflow'" in message
    assert "sklearn, lightgbm, xgboost, onnx, torch, python" in message
    assert "--flavor" in message


@pytest.mark.parametrize("flavor", FLAVORS)
def test_missing_entry_file_names_the_path(flavor: str, model_dir: Path) -> None:
    entry = ENTRIES[flavor]
    expected = model_dir / entry.split(":")[0]

    with pytest.raises(ModelLoadError, match=rf"'{expected}' does not exist \(flavor {flavor}"):
        load_model(flavor, model_dir=model_dir, entry=entry)


def test_directory_as_entry(model_dir: Path) -> None:
    (model_dir / "nested").mkdir()

    with pytest.raises(ModelLoadError, match=r"is a directory, not a file"):
        load_model("onnx", model_dir=model_dir, entry="nested")


@pytest.mark.parametrize("flavor", sorted(LIBRARIES))
def test_missing_package_gives_the_pip_command(
    flavor: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, extra = LIBRARIES[flavor]
    (model_dir / ENTRIES[flavor]).write_bytes(b"anything")
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when it is missing

    with pytest.raises(DependencyMissingError) as info:
        load_model(flavor, model_dir=model_dir, entry=ENTRIES[flavor])

    assert f"pip install 'headrace[{extra}]'" in str(info.value)
    assert f"the {flavor} flavor" in str(info.value)
    assert info.value.extra == extra


def test_options_reach_the_flavor(model_dir: Path) -> None:
    (model_dir / "model.py").write_text(
        "import numpy as np\n"
        "def predict(matrix):\n"
        "    return np.zeros(len(matrix)), np.full((len(matrix), 2), 0.5)\n"
    )
    options = {"classes": ["no", "yes"]}

    out = load_model("python", model_dir=model_dir, entry="model.py:predict", options=options)
    result = out.predict(np.zeros((2, 3)))

    np.testing.assert_array_equal(result.classes, ["no", "yes"])


@pytest.mark.parametrize(
    ("name", "flavor"),
    [
        ("model.pkl", "sklearn"),
        ("model.pickle", "sklearn"),
        ("model.joblib", "sklearn"),
        ("model.onnx", "onnx"),
        ("model.pt", "torch"),
        ("model.pth", "torch"),
        ("model.torchscript", "torch"),
        ("model.pt2", "torch"),
        ("model.py", "python"),
        ("model.json", "xgboost"),
        ("model.ubj", "xgboost"),
        ("model.txt", "lightgbm"),
        ("MODEL.LGB", "lightgbm"),
        ("model.h5", None),
        ("model", None),
    ],
)
def test_detect_flavor_from_the_extension(name: str, flavor: str | None, tmp_path: Path) -> None:
    assert detect_flavor(tmp_path / name) == flavor


def test_detect_flavor_in_a_directory_ignores_notes_and_configs(model_dir: Path) -> None:
    (model_dir / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    (model_dir / "README.txt").write_text("Trained on March data.\n")
    (model_dir / "config.json").write_text('{"threshold": 0.5}')

    assert detect_flavor(model_dir) == "onnx"


def test_detect_flavor_in_a_directory_reads_weak_extensions(model_dir: Path) -> None:
    (model_dir / "model.txt").write_text("tree\nversion=v4\n")
    (model_dir / "notes.txt").write_text("Trained on March data.\n")

    assert detect_flavor(model_dir) == "lightgbm"


def test_detect_flavor_in_an_ambiguous_or_empty_directory(model_dir: Path) -> None:
    assert detect_flavor(model_dir) is None
    (model_dir / "a.onnx").write_bytes(b"")
    (model_dir / "b.joblib").write_bytes(b"")
    assert detect_flavor(model_dir) is None


def test_importing_runtimes_imports_no_ml_library() -> None:
    code = (
        "import sys, headrace.runtimes\n"
        "heavy = {'sklearn', 'joblib', 'lightgbm', 'xgboost', 'onnxruntime', 'onnx', 'torch'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
