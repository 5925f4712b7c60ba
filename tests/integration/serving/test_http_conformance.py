"""Clients nobody here wrote against the live server, and the server's limits.

- tritonclient.http (binary tensor data and JSON) gets the model's own predictions;
- schemathesis drives every documented route from the OpenAPI description;
- body size limit (413), per-request timeout (504), full queue (503 + Retry-After), TLS.

KServe's Python client (`kserve.InferenceRESTClient`) is not here: every kserve release
pins protobuf < 7, and the gRPC stubs of this package need protobuf >= 7.35 (see the
README's serving section).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from headrace.registry import Registry
from support.models import local_registry
from support.serving import (
    RunningServer,
    ServedModels,
    free_port,
    register_models,
    running_server,
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("conformance")
    with local_registry(root) as opened:
        yield opened


@pytest.fixture(scope="module")
def models(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> ServedModels:
    return register_models(registry, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(registry: Registry, models: ServedModels) -> Iterator[RunningServer]:
    with running_server(registry, port=free_port()) as running:
        yield running


def direct(models: ServedModels, rows: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    scores = joblib.load(models.fraud_v1.model).predict_proba(rows)[:, 1]
    return [b"fraud" if s >= 0.5 else b"legit" for s in scores], scores


# -- tritonclient -------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_gets_the_models_own_predictions(
    server: RunningServer, models: ServedModels, binary: bool
) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("fraud")
        assert client.get_model_metadata("fraud")["versions"] == ["1", "2"]
        assert {"name": "fraud", "version": "1", "state": "READY", "reason": ""} in (
            client.get_model_repository_index()
        )
        rows = models.fraud_v1.features[:64].astype(np.float32)
        tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        wanted = [
            triton.InferRequestedOutput("prediction", binary_data=binary),
            triton.InferRequestedOutput("score", binary_data=binary),
        ]
        result = client.infer("fraud", [tensor], outputs=wanted, request_id="t-1")
        labels, scores = direct(models, rows.astype(np.float64))
        got = result.as_numpy("prediction")
        got_labels = [v if isinstance(v, bytes) else str(v).encode() for v in got.tolist()]
        assert got_labels == labels
        np.testing.assert_allclose(result.as_numpy("score"), scores, rtol=1e-12)
        assert result.get_response()["model_version"] == "1"
        # no outputs named: tritonclient asks for every output in binary
        named = [triton.InferInput(f"f{i}", [3], "FP64") for i in range(5)]
        for i, field in enumerate(named):
            field.set_data_from_numpy(models.fraud_v1.features[:3, i], binary_data=binary)
        every = client.infer("fraud", named, model_version="1")
        np.testing.assert_allclose(
            every.as_numpy("score"), direct(models, models.fraud_v1.features[:3])[1], rtol=1e-12
        )
    finally:
        client.close()


def test_tritonclient_sees_protocol_errors(server: RunningServer) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("input-0", [1, 3], "FP64")
        tensor.set_data_from_numpy(np.zeros((1, 3)))
        with pytest.raises(InferenceServerException, match="takes 5 fields in schema order"):
            client.infer("fraud", [tensor])
        with pytest.raises(InferenceServerException, match="Model 'nope' not found"):
            client.infer("nope", [tensor])
    finally:
        client.close()


# -- schemathesis -------------------------------------------------------------------------


def test_every_route_conforms_to_the_openapi_description(server: RunningServer) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/v2/docs/openapi.json")

    @schema.hook
    def map_path_parameters(context: Any, path: dict[str, Any] | None) -> Any:
        # Half of the cases name a served model, so the infer and metadata routes are
        # exercised past "not found" (load/unload keep random names: they are tested
        # against real models in test_http_server).
        if path and "repository" not in context.operation.path and len(path["name"]) % 2:
            path = {**path, "name": "fraud"}
        return path

    @given(case=schema.as_strategy())
    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        # A schema-valid inference request is still refused when its tensors disagree
        # with the model (data count vs shape, names vs fields), which JSON Schema cannot
        # say, and readiness answers 400 for "not ready" as the protocol prescribes: on
        # those routes acceptance of "valid" data is not checked (everything else is).
        stateful = case.operation.path.endswith(("/infer", "/ready"))
        case.call_and_validate(
            timeout=30, excluded_checks=[positive_data_acceptance] if stateful else []
        )

    check()
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": True}


# -- limits -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(registry: Registry, models: ServedModels) -> Iterator[RunningServer]:
    settings_ = {
        "limits": {"max_body_bytes": 4096, "timeout_s": 0.5},
        "batching": {"max_batch_size": 1, "max_queue_rows": 2, "mode": "thread"},
    }
    with running_server(registry, port=free_port(), settings=settings_) as running:
        yield running


def body(rows: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}
        ]
    }


def test_a_body_past_the_limit_is_413(limited: RunningServer, models: ServedModels) -> None:
    big = body([[0.123456789] * 5] * 100)
    response = requests.post(f"{limited.url}/v2/models/fraud/infer", json=big, timeout=30)
    assert response.status_code == 413
    assert "larger than the server's limit of 4096 bytes" in response.json()["error"]
    payload = requests.models.complexjson.dumps(big).encode()
    chunked = requests.post(
        f"{limited.url}/v2/models/fraud/infer",
        data=iter([payload[:2000], payload[2000:]]),  # no Content-Length: counted as it comes
        timeout=30,
    )
    assert chunked.status_code == 413
    small = requests.post(
        f"{limited.url}/v2/models/fraud/infer", json=body([[0.0] * 5]), timeout=30
    )
    assert small.status_code == 200


def test_a_request_past_the_timeout_is_504(limited: RunningServer) -> None:
    started = time.monotonic()
    slow = requests.post(
        f"{limited.url}/v2/models/lab/infer", json=body([[0.0, 90.0, 0, 0, 0]]), timeout=30
    )
    assert slow.status_code == 504
    assert "took longer than 0.5 s (limits.timeout_s)" in slow.json()["error"]
    assert time.monotonic() - started < 0.9  # answered at the timeout, not after the model
    time.sleep(1.0)  # the model finishes its slow batch
    fine = requests.post(f"{limited.url}/v2/models/lab/infer", json=body([[0.0] * 5]), timeout=30)
    assert fine.status_code == 200


def test_a_full_queue_is_503_with_retry_after(limited: RunningServer) -> None:
    url = f"{limited.url}/v2/models/lab/infer"
    answers: list[requests.Response] = []

    def send(rows: list[list[float]]) -> None:
        answers.append(requests.post(url, json=body(rows), timeout=30))

    slow = threading.Thread(target=send, args=([[0.0, 100.0, 0, 0, 0]],))
    slow.start()
    time.sleep(0.2)  # the slow batch runs (1 s); the queue holds 2 rows
    queued = [threading.Thread(target=send, args=([[0.0] * 5],)) for _ in range(2)]
    for thread in queued:
        thread.start()
    time.sleep(0.1)
    refused = requests.post(url, json=body([[0.0] * 5]), timeout=30)
    for thread in [slow, *queued]:
        thread.join()
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert "2 rows queued (limit 2)" in refused.json()["error"]
    time.sleep(1.0)
    assert requests.post(url, json=body([[0.0] * 5]), timeout=30).status_code == 200


# -- TLS ----------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


def test_tls_when_given_a_certificate(
    registry: Registry, models: ServedModels, tmp_path: Path
) -> None:
    certfile, keyfile = self_signed(tmp_path)
    tls = {"tls": {"certfile": str(certfile), "keyfile": str(keyfile)}}
    with running_server(registry, port=free_port(), settings=tls) as running:
        assert running.url.startswith("https://")
        rows = models.fraud_v1.features[:2]
        response = requests.post(
            f"{running.url}/v2/models/fraud/infer",
            json=body(rows.tolist()),
            verify=str(certfile),
            headers={"Connection": "close"},  # no idle TLS connection left for shutdown
            timeout=30,
        )
        assert response.status_code == 200
        np.testing.assert_allclose(
            response.json()["outputs"][1]["data"], direct(models, rows)[1], rtol=1e-12
        )
        # the server's own certificate, not one a default trust store knows
        with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            requests.get(f"{running.url}/v2/health/live", timeout=5)
