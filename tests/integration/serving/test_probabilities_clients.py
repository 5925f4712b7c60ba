"""Per-class probabilities (issue 9) through clients nobody here wrote.

A random forest fitted on scikit-learn's wine data (3 classes) is served over HTTP and
gRPC; tritonclient.http (JSON and binary data) and tritonclient.grpc ask for the opt-in
``probabilities`` output and must read back exactly ``model.predict_proba``, with the class
names in the output's ``classes`` parameter. A request that does not ask gets today's two
outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
grpc = pytest.importorskip("grpc")

from support.models import ModelFiles, draft_from, local_registry  # noqa: E402
from support.serving import RunningServer, free_port, running_server  # noqa: E402

LABELS = ["barolo", "grignolino", "barbera"]


def _write_wine_release(directory: Path) -> ModelFiles:
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    directory.mkdir(parents=True, exist_ok=True)
    x, y = load_wine(return_X_y=True)
    model = RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y)
    model_path = directory / "model.pkl"
    joblib.dump(model, model_path)
    names = [f"f{i}" for i in range(x.shape[1])]
    schema_path = directory / "schema.yaml"
    fields = [{"name": n, "type": "float"} for n in names]
    schema_path.write_text(yaml.safe_dump({"fields": fields}))
    data_path = directory / "train.parquet"
    pq.write_table(pa.table({**{n: x[:, i] for i, n in enumerate(names)}, "label": y}), data_path)
    metrics_path = directory / "metrics.json"
    metrics_path.write_text(json.dumps({"accuracy": float(model.score(x, y))}))
    config_path = directory / "config.yaml"
    config_path.write_text(yaml.safe_dump({"labels": LABELS}))
    return ModelFiles(
        model=model_path,
        schema=schema_path,
        data=data_path,
        metrics=metrics_path,
        config=config_path,
        features=x,
        labels=y,
    )


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, ModelFiles]]:
    root = tmp_path_factory.mktemp("wine")
    files = _write_wine_release(root / "model")
    with local_registry(root / "home") as registry:
        registry.register(draft_from(files, root, name="wine"), alias="champion")
        settings = {"grpc_port": 0, "batching": {"max_batch_size": 64, "max_batch_time_ms": 2}}
        with running_server(registry, port=free_port(), settings=settings) as running:
            yield running, files


@pytest.fixture(scope="module")
def rows(wine: tuple[RunningServer, ModelFiles]) -> np.ndarray:
    # Rows of every class, in an order the model did not see them in.
    features = wine[1].features
    return np.ascontiguousarray(features[np.random.default_rng(3).permutation(len(features))[:40]])


def _direct(files: ModelFiles, x: np.ndarray) -> np.ndarray:
    proba: np.ndarray = joblib.load(files.model).predict_proba(x)
    return proba


def _http_inputs(x: np.ndarray, *, binary: bool) -> list[Any]:
    tensor = httpclient.InferInput("input-0", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return [tensor]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_http_reads_predict_proba(
    wine: tuple[RunningServer, ModelFiles], rows: np.ndarray, binary: bool
) -> None:
    server, files = wine
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        result = client.infer(
            "wine",
            _http_inputs(rows, binary=binary),
            outputs=[
                httpclient.InferRequestedOutput("probabilities", binary_data=binary),
                httpclient.InferRequestedOutput("prediction", binary_data=binary),
            ],
        )
    finally:
        client.close()
    proba = result.as_numpy("probabilities")
    expected = _direct(files, rows)
    assert proba.dtype == np.float64 and proba.shape == (len(rows), 3)
    np.testing.assert_array_equal(proba, expected)
    assert result.get_output("probabilities")["parameters"]["classes"] == LABELS
    predictions = [p.decode() if isinstance(p, bytes) else p for p in result.as_numpy("prediction")]
    assert predictions == [LABELS[i] for i in expected.argmax(axis=1)]


def test_tritonclient_http_default_answer_is_unchanged(
    wine: tuple[RunningServer, ModelFiles], rows: np.ndarray
) -> None:
    server, _ = wine
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        result = client.infer("wine", _http_inputs(rows[:3], binary=False))
        meta = client.get_model_metadata("wine")
    finally:
        client.close()
    assert [o["name"] for o in result.get_response()["outputs"]] == ["prediction", "score"]
    assert meta["outputs"][-1] == {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]}


def test_tritonclient_grpc_reads_predict_proba(
    wine: tuple[RunningServer, ModelFiles], rows: np.ndarray
) -> None:
    server, files = wine
    address = f"127.0.0.1:{server.app.dataplane.grpc_port}"
    with grpcclient.InferenceServerClient(url=address) as client:
        tensor = grpcclient.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)
        result = client.infer(
            "wine", [tensor], outputs=[grpcclient.InferRequestedOutput("probabilities")]
        )
        default = client.infer("wine", [tensor])
        meta = client.get_model_metadata("wine")
    np.testing.assert_array_equal(result.as_numpy("probabilities"), _direct(files, rows))
    output = result.get_output("probabilities")
    assert list(output.shape) == [len(rows), 3]
    assert json.loads(output.parameters["classes"].string_param) == LABELS
    assert [o.name for o in default.get_response().outputs] == ["prediction", "score"]
    assert (meta.outputs[-1].name, list(meta.outputs[-1].shape)) == ("probabilities", [-1, 3])


def test_grpc_typed_contents_request_gets_probabilities(
    wine: tuple[RunningServer, ModelFiles], rows: np.ndarray
) -> None:
    from headrace.serving._proto import oip_v2_pb2 as pb

    server, files = wine
    request = pb.ModelInferRequest(model_name="wine", id="typed")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows[:5].shape))
    tensor.contents.fp64_contents.extend(rows[:5].reshape(-1).tolist())
    request.outputs.add(name="probabilities")
    with grpc.insecure_channel(f"127.0.0.1:{server.app.dataplane.grpc_port}") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        response = call(request, timeout=30)
    (output,) = response.outputs
    values = np.frombuffer(response.raw_output_contents[0], dtype="<f8").reshape(output.shape)
    np.testing.assert_array_equal(values, _direct(files, rows[:5]))


def test_an_unknown_output_is_a_400_that_lists_probabilities(
    wine: tuple[RunningServer, ModelFiles], rows: np.ndarray
) -> None:
    import requests

    server, _ = wine
    body = {
        "inputs": [{"name": "x", "shape": [1, 13], "datatype": "FP64", "data": rows[:1].tolist()}],
        "outputs": [{"name": "probabilities"}, {"name": "margin"}],
    }
    answer = requests.post(f"{server.url}/v2/models/wine/infer", json=body, timeout=30)
    assert answer.status_code == 400
    assert "output 'margin'" in answer.json()["error"]
    assert "prediction, score, probabilities" in answer.json()["error"]
