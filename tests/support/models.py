"""Real models and release inputs written the way a user would write them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

N_FEATURES = 5


@dataclass(frozen=True)
class ModelFiles:
    """Paths of a trained model and its release inputs."""

    model: Path
    schema: Path
    data: Path
    metrics: Path
    config: Path
    features: np.ndarray
    labels: np.ndarray


def synthetic(rows: int, *, seed: int = 7, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded binary classification problem with `N_FEATURES` numeric features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, size=(rows, N_FEATURES))
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] + rng.normal(0, 0.5, rows) > 0).astype(int)
    return x, y


def write_sklearn_release(
    directory: Path, *, rows: int = 400, seed: int = 7, c: float = 1.0
) -> ModelFiles:
    """Train a logistic regression and write model, schema, data, metrics and config."""
    from sklearn.linear_model import LogisticRegression

    directory.mkdir(parents=True, exist_ok=True)
    x, y = synthetic(rows, seed=seed)
    model = LogisticRegression(C=c).fit(x, y)
    model_path = directory / "model.pkl"
    joblib.dump(model, model_path)
    names = [f"f{i}" for i in range(N_FEATURES)]
    schema_path = directory / "schema.yaml"
    schema_path.write_text(
        yaml.safe_dump(
            {"fields": [{"name": n, "type": "float", "min": -100, "max": 100} for n in names]}
        )
    )
    table = pa.table({**{n: x[:, i] for i, n in enumerate(names)}, "label": y})
    data_path = directory / "train.parquet"
    pq.write_table(table, data_path)
    metrics_path = directory / "metrics.json"
    metrics_path.write_text(f'{{"accuracy": {float(model.score(x, y))}}}')
    config_path = directory / "config.yaml"
    config_path.write_text("threshold: 0.5\nlabels: [legit, fraud]\n")
    return ModelFiles(
        model=model_path,
        schema=schema_path,
        data=data_path,
        metrics=metrics_path,
        config=config_path,
        features=x,
        labels=y,
    )


def draft_from(files: ModelFiles, workdir: Path, name: str = "fraud") -> Any:
    """A `ReleaseDraft` of the files, its scratch directory under `workdir`."""
    from headrace.release.bundle import build_draft

    scratch = workdir / f"scratch-{name}"
    scratch.mkdir(parents=True, exist_ok=True)
    return build_draft(
        files.model,
        name=name,
        flavor="sklearn",
        workdir=scratch,
        schema_path=files.schema,
        data_path=files.data,
        metrics_path=files.metrics,
        config_path=files.config,
        code_version="test",
    )


def register_in_subprocess(url: str, root: str, model_dir: str, out: Any) -> None:
    """Register three releases from another process (run with multiprocessing spawn)."""
    from headrace.registry import Registry

    tmp = Path(root)
    files = write_sklearn_release(Path(model_dir))
    with Registry(
        url, artifacts=f"file://{tmp / 'artifacts'}", actor="proc", cache_dir=tmp / "cache"
    ) as registry:
        versions = [
            registry.register(draft_from(files, Path(model_dir)), allow_duplicate=True).version
            for _ in range(3)
        ]
    out.put(versions)


def local_registry(root: Path, *, url: str | None = None, actor: str = "tester@ci") -> Any:
    """A `Registry` under `root` (SQLite unless `url` names another store), local
    artifacts and cache: open it with ``with local_registry(root) as registry:``."""
    from headrace.registry import Registry

    return Registry(
        url or f"sqlite:///{root / 'registry.db'}",
        artifacts=f"file://{root / 'artifacts'}",
        actor=actor,
        cache_dir=root / "cache",
    )
