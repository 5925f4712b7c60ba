"""`import_runtime` and `pickle_modules`: what a model's load will import, found without
loading it (a pickle is read opcode by opcode, never unpickled)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from headrace.runtimes import import_runtime, pickle_modules


@pytest.fixture(scope="module")
def estimator() -> LogisticRegression:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_joblib_files_name_the_estimator_module(
    tmp_path: Path, estimator: LogisticRegression, compress: object
) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(estimator, path, compress=compress)
    modules = pickle_modules(path)
    assert modules[0] == "sklearn.linear_model._logistic"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_pickles_name_every_module(
    tmp_path: Path, estimator: LogisticRegression, protocol: int
) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"model": estimator, "when": np.float64(1)}, protocol))
    modules = pickle_modules(path)
    assert "sklearn.linear_model._logistic" in modules
    assert any(m.startswith("numpy") for m in modules)


def test_a_pickle_is_not_run(tmp_path: Path) -> None:
    # GLOBAL os system + REDUCE: unpickling would run a command; reading names `posix`/`os`.
    marker = tmp_path / "ran"
    payload = b"cos\nsystem\n(V touch " + str(marker).encode() + b"\ntR."
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    assert pickle_modules(path) == ["os"]
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"not a pickle at all", b"\x80\x04\x95", b"\x1f\x8b\x08garbage", b"\x78\x9cgarbage"],
    ids=["empty", "text", "truncated", "bad-gzip", "bad-zlib"],
)
def test_malformed_files_name_nothing(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(content)
    assert pickle_modules(path) == []


def test_a_missing_file_names_nothing(tmp_path: Path) -> None:
    assert pickle_modules(tmp_path / "gone.pkl") == []


def _fresh(code: str) -> str:
    """Run `code` in a new interpreter (nothing imported yet); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_sklearn_flavor_imports_the_pickles_modules(
    tmp_path: Path, estimator: LogisticRegression
) -> None:
    joblib.dump(estimator, tmp_path / "model.joblib")
    out = _fresh(
        "import sys; from pathlib import Path; from headrace.runtimes import import_runtime\n"
        f"done = import_runtime('sklearn', model_dir=Path({str(tmp_path)!r}), "
        "entry='model.joblib')\n"
        "print(sorted(done)); print('sklearn.linear_model._logistic' in sys.modules)"
    )
    imported, present = out.splitlines()
    assert "'joblib'" in imported
    assert "'sklearn.linear_model._logistic'" in imported
    assert present == "True"


def test_python_flavor_imports_the_files_top_level_imports(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(
        "import json\nfrom fractions import Fraction\nfrom . import sibling\n"
        "import not_installed_anywhere\n\ndef predict(m):\n    import colorsys\n    return m\n"
    )
    out = _fresh(
        "import sys; from pathlib import Path; from headrace.runtimes import import_runtime\n"
        f"print(import_runtime('python', model_dir=Path({str(tmp_path)!r}), "
        "entry='model.py:predict'))\nprint('colorsys' in sys.modules)"
    )
    imported, colorsys = out.splitlines()
    # never the user's module itself, a relative import, a function-level one, or one
    # that is not installed (the load reports that with its own message)
    assert "'fractions'" in imported
    assert "not_installed" not in imported
    assert "sibling" not in imported
    assert colorsys == "False"


def test_a_broken_or_missing_entry_imports_only_the_runtime(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("def predict(:\n")
    expected = [m for m in ["headrace.runtimes.python"] if m not in sys.modules]
    assert import_runtime("python", model_dir=tmp_path, entry="model.py:predict") == expected
    assert import_runtime("sklearn", model_dir=tmp_path, entry="absent.pkl") == []
    assert import_runtime("no-such-flavor", model_dir=tmp_path, entry="model.py") == []


def test_a_module_entry_of_a_code_directory_is_scanned(tmp_path: Path) -> None:
    """``wrapper:Model`` names ``wrapper.py``: its top-level imports are pre-imported."""
    sys.modules.pop("wave", None)  # a stdlib leaf module nothing else here imports
    (tmp_path / "wrapper.py").write_text("import wave\nfrom .features import x\n")
    assert "wave" in import_runtime("python", model_dir=tmp_path, entry="wrapper:Model")
    assert "wave" in sys.modules
