"""The OIP v2 HTTP server, live on a port, over a real registry and real models.

Every route, every bad input the protocol can carry (each answered with a clear error and
the right status while the server keeps serving), bearer tokens, metrics, the repository
extension, and an alias move under load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from headrace.registry import Registry
from support.models import local_registry
from support.serving import (
    RunningServer,
    ServedModels,
    free_port,
    register_models,
    running_server,
)

INFERENCE_TOKEN = "inference-token-0123456789"  # noqa: S105 - a test token
MANAGEMENT_TOKEN = "management-token-0123456789"  # noqa: S105 - a test token
AUTH = {"Authorization": f"Bearer {INFERENCE_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {MANAGEMENT_TOKEN}"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("serving")
    with local_registry(root) as opened:
        yield opened


@pytest.fixture(scope="module")
def models(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> ServedModels:
    return register_models(registry, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(registry: Registry, models: ServedModels) -> Iterator[RunningServer]:
    settings = {
        "auth": {"inference_token": INFERENCE_TOKEN, "management_token": MANAGEMENT_TOKEN},
        "batching": {"max_batch_size": 64, "max_batch_time_ms": 2},
    }
    with running_server(registry, port=free_port(), settings=settings) as running:
        yield running


def infer(
    server: RunningServer, body: Any, *, model: str = "fraud", **kwargs: Any
) -> requests.Response:
    return requests.post(
        f"{server.url}/v2/models/{model}/infer",
        json=body,
        headers=kwargs.pop("headers", AUTH),
        timeout=30,
        **kwargs,
    )


def matrix_body(rows: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}
        ]
    }


def expected(models: ServedModels, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """What the fraud:1 model itself says (threshold 0.5, labels legit/fraud)."""
    scores = joblib.load(models.fraud_v1.model).predict_proba(rows)[:, 1]
    return ["fraud" if s >= 0.5 else "legit" for s in scores], scores


def outputs(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def assert_still_serving(server: RunningServer, models: ServedModels) -> None:
    rows = models.fraud_v1.features[:2]
    labels, _ = expected(models, rows)
    assert outputs(infer(server, matrix_body(rows)))["prediction"]["data"] == labels


# -- routes ---------------------------------------------------------------------------


def test_health_and_server_metadata_are_open(server: RunningServer) -> None:
    assert requests.get(f"{server.url}/v2/health/live", timeout=10).json() == {"live": True}
    ready = requests.get(f"{server.url}/v2/health/ready", timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    meta = requests.get(f"{server.url}/v2", timeout=10).json()
    assert meta["name"] == "headrace"
    assert "model_repository" in meta["extensions"]


def test_model_metadata_and_readiness(server: RunningServer) -> None:
    meta = requests.get(f"{server.url}/v2/models/fraud", headers=AUTH, timeout=10).json()
    assert meta["name"] == "fraud"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "sklearn"
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
        (f"f{i}", "FP64") for i in range(5)
    ]
    assert [t["name"] for t in meta["outputs"]] == ["prediction", "score", "probabilities"]
    assert meta["outputs"][2] == {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]}
    ready = requests.get(f"{server.url}/v2/models/fraud/ready", headers=AUTH, timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"name": "fraud", "ready": True})
    v2 = requests.get(f"{server.url}/v2/models/fraud/versions/2", headers=AUTH, timeout=10)
    assert v2.status_code == 200 and v2.json()["name"] == "fraud"
    missing = requests.get(f"{server.url}/v2/models/nope/ready", headers=AUTH, timeout=10)
    assert missing.status_code == 404
    assert "Model 'nope' not found" in missing.json()["error"]


def test_infer_matches_the_model_called_directly(
    server: RunningServer, models: ServedModels
) -> None:
    rows = models.fraud_v1.features[:50]
    labels, scores = expected(models, rows)
    response = infer(server, {**matrix_body(rows), "id": "req-1"})
    body = response.json()
    assert body["model_name"] == "fraud" and body["model_version"] == "1"
    assert body["id"] == "req-1"
    assert body["parameters"]["release"] == "fraud:1"
    got = outputs(response)
    assert got["prediction"]["datatype"] == "BYTES" and got["prediction"]["shape"] == [50]
    assert got["prediction"]["data"] == labels
    np.testing.assert_allclose(got["score"]["data"], scores, rtol=1e-12)


def test_named_inputs_and_requested_outputs(server: RunningServer, models: ServedModels) -> None:
    rows = models.fraud_v1.features[:3]
    _, scores = expected(models, rows)
    body = {
        "inputs": [
            {"name": f"f{i}", "shape": [3], "datatype": "FP32", "data": rows[:, i].tolist()}
            for i in range(5)
        ],
        "outputs": [{"name": "score"}],
    }
    got = outputs(infer(server, body))
    assert list(got) == ["score"]
    np.testing.assert_allclose(got["score"]["data"], scores, rtol=1e-12)


def test_a_version_is_served_by_number(server: RunningServer, models: ServedModels) -> None:
    rows = models.fraud_v2.features[:5]
    response = requests.post(
        f"{server.url}/v2/models/fraud/versions/2/infer",
        json=matrix_body(rows),
        headers=AUTH,
        timeout=30,
    )
    assert response.json()["model_version"] == "2"
    direct = joblib.load(models.fraud_v2.model).predict_proba(rows)[:, 1]
    np.testing.assert_allclose(outputs(response)["score"]["data"], direct, rtol=1e-12)


def binary_nan_request(server: RunningServer) -> requests.Response:
    """A NaN can only travel as binary tensor data (JSON has no NaN)."""
    values = np.array([[np.nan, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    header = (
        b'{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":20}}]}'
    )
    return requests.post(
        f"{server.url}/v2/models/fraud/infer",
        data=header + values.tobytes(),
        headers={**AUTH, "Inference-Header-Content-Length": str(len(header))},
        timeout=30,
    )


BAD_INPUTS = [
    pytest.param(b'{"inputs": [', 400, "not valid JSON", id="invalid-json"),
    pytest.param(
        b'{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP64","data":[NaN,1,2,3,4]}]}',
        400,
        "NaN and Infinity are not JSON",
        id="json-nan",
    ),
    pytest.param(b'{"input": []}', 400, "Object missing required field `inputs`", id="no-inputs"),
    pytest.param(
        b'{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP64","data":["a","b","c","d","e"]}]}',
        400,
        "expected `float`, got `str` at `x[0]`",
        id="wrong-datatype",
    ),
    pytest.param(
        b'{"inputs":[{"name":"x","shape":[1,5],"datatype":"BYTES","data":["a","b","c","d","e"]}]}',
        400,
        "Expected `float`, got `str` - at `$.f0`",
        id="bytes-for-a-float-field",
    ),
    pytest.param(
        b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP64","data":[1,2,3]}]}',
        400,
        "takes 5 fields in schema order",
        id="wrong-shape",
    ),
    pytest.param(
        b'{"inputs":[{"name":"x","shape":[2,5],"datatype":"FP64","data":[1,2,3,4,5]}]}',
        400,
        "has shape [2, 5] (10 values) but its data holds 5 values",
        id="shape-and-data-disagree",
    ),
    pytest.param(
        b'{"inputs":[{"name":"f0","shape":[1],"datatype":"FP64","data":[1]}]}',
        400,
        "lacks input(s) f1, f2, f3, f4",
        id="missing-input",
    ),
    pytest.param(
        b'{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP64","data":[500,0,0,0,0]}]}',
        400,
        "row 0: Value 500.0 above maximum 100.0 - at `$.f0`",
        id="out-of-range",
    ),
    pytest.param(
        b'{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP99","data":[1,2,3,4,5]}]}',
        400,
        "'FP99', which is not a datatype of the protocol",
        id="unknown-datatype",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_INPUTS)
def test_bad_input_is_a_clear_error_and_the_server_keeps_serving(
    server: RunningServer, models: ServedModels, body: bytes, status: int, message: str
) -> None:
    response = requests.post(
        f"{server.url}/v2/models/fraud/infer", data=body, headers=AUTH, timeout=30
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert_still_serving(server, models)


def test_nan_where_the_schema_forbids_it(server: RunningServer, models: ServedModels) -> None:
    response = binary_nan_request(server)
    assert response.status_code == 400, response.text
    assert "row 0: NaN not allowed - at `$.f0`" in response.json()["error"]
    assert_still_serving(server, models)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/nope/infer", 404, "Model 'nope' not found: check the name"),
        ("/v2/models/fraud/versions/9/infer", 404, "Version '9' of model 'fraud' does not exist"),
        ("/v2/models/fraud/versions/latest/infer", 404, "versions are numbers"),
        ("/v2/models/fraud/explain", 404, "model routes are /v2/models/NAME"),
        ("/v3/anything", 404, "routes are under /v2"),
    ],
)
def test_unknown_models_versions_and_routes_are_404(
    server: RunningServer, models: ServedModels, path: str, status: int, message: str
) -> None:
    rows = models.fraud_v1.features[:1]
    response = requests.post(
        f"{server.url}{path}", json=matrix_body(rows), headers=AUTH, timeout=30
    )
    assert response.status_code == status
    assert message in response.json()["error"]


def test_wrong_method_is_405(server: RunningServer) -> None:
    response = requests.get(f"{server.url}/v2/models/fraud/infer", headers=AUTH, timeout=10)
    assert response.status_code == 405
    assert "GET is not allowed on /v2/models/fraud/infer: use POST" in response.json()["error"]


def test_a_model_that_raises_fails_only_its_own_request(
    server: RunningServer, models: ServedModels
) -> None:
    poison = np.array([[60.0, 0, 0, 0, 0]])
    good = np.array([[1.0, 0, 0, 0, 0], [2.0, 0, 0, 0, 0]])
    results: dict[str, requests.Response] = {}

    def send(key: str, rows: np.ndarray) -> None:
        results[key] = infer(server, matrix_body(rows), model="lab")

    threads = [threading.Thread(target=send, args=(f"good{i}", good)) for i in range(4)]
    threads.append(threading.Thread(target=send, args=("poison", poison)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = results.pop("poison")
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert "Release lab:1 of model 'lab' raised on 1 of 1 rows" in error
    assert "RuntimeError: poison amount on poison rows [0]" in error
    for response in results.values():
        assert outputs(response)["prediction"]["data"] == [1.0, 1.0]
    assert_still_serving(server, models)


# -- auth -------------------------------------------------------------------------------


def test_bearer_tokens_guard_their_routes_and_never_reach_the_log(
    server: RunningServer, models: ServedModels, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = matrix_body(models.fraud_v1.features[:1])
    none = infer(server, body, headers={})
    assert none.status_code == 401
    assert none.headers["WWW-Authenticate"].startswith("Bearer")
    assert "needs the inference bearer token" in none.json()["error"]
    wrong = infer(server, body, headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401 and "the token sent is not it" in wrong.json()["error"]
    swapped = infer(server, body, headers=ADMIN)
    assert swapped.status_code == 401
    index = requests.post(f"{server.url}/v2/repository/index", headers=AUTH, timeout=10)
    assert index.status_code == 401 and "management bearer token" in index.json()["error"]
    assert requests.post(f"{server.url}/v2/repository/index", headers=ADMIN, timeout=10).ok
    assert requests.get(f"{server.url}/metrics", timeout=10).ok
    assert INFERENCE_TOKEN not in caplog.text and MANAGEMENT_TOKEN not in caplog.text
    assert INFERENCE_TOKEN not in repr(server.config)


# -- the repository extension -----------------------------------------------------------


def test_repository_index_unload_and_load(server: RunningServer, models: ServedModels) -> None:
    url = f"{server.url}/v2/repository"
    index = requests.post(f"{url}/index", headers=ADMIN, timeout=10).json()
    assert {"name": "fraud", "version": "1", "state": "READY", "reason": ""} in index
    only_ready = requests.post(f"{url}/index", json={"ready": True}, headers=ADMIN, timeout=10)
    assert all(entry["state"] == "READY" for entry in only_ready.json())
    bad = requests.post(f"{url}/index", data=b"[1", headers=ADMIN, timeout=10)
    assert bad.status_code == 400
    assert requests.post(f"{url}/models/lab/unload", headers=ADMIN, timeout=10).json() == {}
    body = matrix_body(np.zeros((1, 5)))
    unloaded = infer(server, body, model="lab")
    assert unloaded.status_code == 503 and unloaded.headers["Retry-After"] == "1"
    assert "was unloaded" in unloaded.json()["error"]
    ready = requests.get(f"{server.url}/v2/models/lab/ready", headers=AUTH, timeout=10)
    assert (ready.status_code, ready.json()["ready"]) == (400, False)
    assert requests.post(f"{url}/models/lab/load", headers=ADMIN, timeout=30).status_code == 200
    assert outputs(infer(server, body, model="lab"))["prediction"]["data"] == [1.0]
    missing = requests.post(f"{url}/models/nope/load", headers=ADMIN, timeout=10)
    assert missing.status_code == 404


# -- metrics ----------------------------------------------------------------------------


def test_metrics_count_requests_batches_and_queues(
    server: RunningServer, models: ServedModels
) -> None:
    infer(server, matrix_body(models.fraud_v1.features[:3]))
    infer(server, {"inputs": []})
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests_total = {
        (s.labels["model"], s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["headrace_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests_total[("fraud", "infer", "200")] >= 1
    assert requests_total[("fraud", "infer", "400")] >= 1
    assert all(model in ("", "fraud", "lab") for model, _, _ in requests_total)
    batch_rows = [s for s in families["headrace_batch_rows"].samples if s.name.endswith("_sum")]
    assert any(s.labels["model"] == "fraud" and s.value >= 3 for s in batch_rows)
    assert "headrace_http_request_seconds" in families
    queue = {s.labels["model"]: s.value for s in families["headrace_queue_rows"].samples}
    assert queue.get("fraud") == 0
    assert "headrace_pool_models" in families  # the repository's metrics, same registry


# -- hot swap -----------------------------------------------------------------------------


def test_an_alias_move_switches_releases_without_failing_a_request(
    server: RunningServer, models: ServedModels, registry: Registry
) -> None:
    rows = models.fraud_v1.features[:4]
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(
                    f"{server.url}/v2/models/fraud/infer",
                    json=matrix_body(rows),
                    headers=AUTH,
                    timeout=30,
                )
                version = response.json().get("model_version", "") if response.ok else ""
                seen.append((response.status_code, version))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.3)
        registry.set_alias("fraud", "champion", 2, reason="test promotion")
        deadline = time.monotonic() + 10
        while not any(version == "2" for _, version in seen[-8:]):
            assert time.monotonic() < deadline, "the alias move was not followed within 10 s"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        registry.set_alias("fraud", "champion", 1, reason="test rollback")
        deadline = time.monotonic() + 10
        while infer(server, matrix_body(rows)).json()["model_version"] != "1":
            assert time.monotonic() < deadline, "the rollback was not followed within 10 s"
            time.sleep(0.05)
    statuses = {status for status, _ in seen}
    assert statuses == {200}, f"requests failed during the swap: {statuses}"
    versions = [version for _, version in seen]
    first_new = versions.index("2")
    assert set(versions[:first_new]) == {"1"}
    assert versions[-1] == "2"
