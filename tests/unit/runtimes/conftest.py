"""Seeded synthetic data for the runtime tests: 20 numeric features, a few hundred rows.

Each dataset fixture is ``(x, y)``; the seed (`data_seed`) is fixed, so any failure
reproduces as is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

SEED = 20260611
FEATURES = 20

XY = tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]


@pytest.fixture(scope="session")
def data_seed() -> int:
    """The fixed seed of these datasets and models.

    Fixed rather than the root `seed` fixture's fresh draw: the tests compare float32
    runtimes with tolerances, and the datasets are built once per session.
    """
    return SEED


@pytest.fixture(scope="session")
def binary_data() -> XY:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=300, n_features=FEATURES, n_informative=8, random_state=SEED
    )
    return x, y


@pytest.fixture(scope="session")
def multiclass_data() -> XY:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=300,
        n_features=FEATURES,
        n_informative=8,
        n_classes=3,
        random_state=SEED + 1,
    )
    return x, y


@pytest.fixture(scope="session")
def regression_data() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=300, n_features=FEATURES, noise=5.0, random_state=SEED + 2)
    return x, y


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """An empty directory standing in for a release's model directory."""
    path = tmp_path / "model"
    path.mkdir()
    return path
