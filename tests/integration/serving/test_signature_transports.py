"""Issue 9: every transport maps columns by name into the model's signature order.

A wine forest registered with its training data's columns reversed (the model's own
``feature_names_in_`` decides) is scored over HTTP (one OIP tensor per field, in a shuffled
order) and through the service a stream worker builds (`load_service`, records with keys in
any order): every prediction equals the model's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from headrace.api import register
from headrace.inference.loading import load_service
from headrace.registry import Registry
from support.serving import RunningServer, free_port, running_server


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Any, Any]]:
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    root = tmp_path_factory.mktemp("signature-transports")
    x, y = load_wine(return_X_y=True, as_frame=True)
    x = x.rename(columns=lambda c: c.replace("/", "_"))
    model = RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y)
    urls = {"registry": f"sqlite:///{root / 'registry.db'}", "artifacts": f"file://{root / 'a'}"}
    register(model, name="wine", data=x[x.columns[::-1]], alias="champion", **urls)
    registry = Registry(
        urls["registry"], artifacts=urls["artifacts"], actor="t@ci", cache_dir=root / "cache"
    )
    with registry:
        yield registry, x, model


@pytest.fixture(scope="module")
def server(wine: tuple[Registry, Any, Any]) -> Iterator[RunningServer]:
    with running_server(wine[0], port=free_port()) as running:
        yield running


def test_http_tensors_in_any_order_get_the_models_predictions(
    server: RunningServer, wine: tuple[Registry, Any, Any]
) -> None:
    _, x, model = wine
    rng = np.random.default_rng(21)
    rows = x.iloc[:40]
    inputs = [
        {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": rows[c].tolist()}
        for c in rng.permutation(x.columns)
    ]
    response = requests.post(
        f"{server.url}/v2/models/wine/infer", json={"inputs": inputs}, timeout=30
    )
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert [int(v) for v in outputs["prediction"]] == list(model.predict(rows))


def test_the_stream_workers_service_maps_records_by_name(
    wine: tuple[Registry, Any, Any],
) -> None:
    registry, x, model = wine
    service = load_service(registry, "wine@champion")
    assert service.inputs == list(x.columns)
    rng = np.random.default_rng(22)
    records = [{c: float(x.iloc[i][c]) for c in rng.permutation(x.columns)} for i in range(len(x))]
    result = service.infer_records(records)
    assert result.n_predicted == len(x)
    assert list(result.predictions) == list(model.predict(x))
