"""The events, the two models and the temporary registry every contender loads from."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
N_FEATURES = 20
FEATURES = [f"f{i:02d}" for i in range(N_FEATURES)]
TRAIN_ROWS = 50_000
SEED = 20261122
BATCH = 512  # the worker's batch.max_size default; the bare loop uses the same
WAIT_MS = 5.0  # the worker's batch.max_wait_ms default
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "604800000"}
PACED_BASE = 10_000_000  # event ids of the paced latency run
WARM_BASE = 20_000_000  # event ids of its warm-up events
COMMON_RATE = 1_000  # events/s of the latency runs every contender can sustain


def make_data(events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows and labels, and `events` fresh rows of the same problem."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=TRAIN_ROWS + events,
        n_features=N_FEATURES,
        n_informative=10,
        flip_y=0.05,
        random_state=SEED,
    )
    return x[:TRAIN_ROWS], y[:TRAIN_ROWS], np.round(x[TRAIN_ROWS:], 2)


def encode(event_id: int, row: list[float]) -> bytes:
    """One event: ``{"id": 17, "f00": 0.52, ..., "f19": -1.3}``."""
    payload: dict[str, Any] = {"id": event_id}
    payload.update(zip(FEATURES, row, strict=True))
    return orjson.dumps(payload)


def train_and_register(root: Path, x: np.ndarray, y: np.ndarray) -> dict[str, Path]:
    """Fit both models, register each as ``bench-<kind>@champion``; return their pickles."""
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from headrace.release.bundle import build_draft

    estimators = {
        "lr": LogisticRegression(max_iter=1000),
        # early_stopping off: exactly 100 trees, whatever the validation split says.
        "gbm": HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0),
    }
    schema = root / "schema.yaml"
    schema.write_text(yaml.safe_dump({"fields": [{"name": n, "type": "float"} for n in FEATURES]}))
    config = root / "config.yaml"
    config.write_text("threshold: 0.5\nlabels: [legit, fraud]\n")
    data = root / "train.parquet"
    pq.write_table(pa.table({**{n: x[:, i] for i, n in enumerate(FEATURES)}, "label": y}), data)
    pickles = {}
    with registry_for(root) as registry:
        for kind, estimator in estimators.items():
            estimator.fit(x, y)
            directory = root / f"model-{kind}"
            directory.mkdir()
            pickles[kind] = directory / "model.pkl"
            joblib.dump(estimator, pickles[kind])
            metrics = directory / "metrics.json"
            metrics.write_text(f'{{"train_accuracy": {float(estimator.score(x, y))}}}')
            scratch = root / f"draft-{kind}"
            scratch.mkdir()
            draft = build_draft(
                pickles[kind],
                name=f"bench-{kind}",
                flavor="sklearn",
                workdir=scratch,
                schema_path=schema,
                data_path=data,
                metrics_path=metrics,
                config_path=config,
                code_version="bench",
            )
            registry.register(draft, alias="champion")
    return pickles


@contextmanager
def registry_for(root: Path) -> Iterator[Any]:
    from headrace.registry import Registry

    registry = Registry(
        f"sqlite:///{root / 'registry.db'}",
        artifacts=f"file://{root / 'artifacts'}",
        actor="bench@localhost",
        cache_dir=root / f"cache-{os.getpid()}",
    )
    try:
        yield registry
    finally:
        registry.close()
