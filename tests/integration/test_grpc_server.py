"""``inference.GRPCInferenceService`` against tritonclient, a client nobody here wrote.

The server runs in this process, on its own event loop thread, over a real registry and a
real scikit-learn release; tritonclient talks to it over a real socket. Being in the same
process as tritonclient also proves that headrace's protobuf messages and tritonclient's
coexist in protobuf's process-wide descriptor pool.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
grpc = pytest.importorskip("grpc")

from tritonclient.utils import InferenceServerException  # noqa: E402

from headrace.registry import Registry  # noqa: E402
from headrace.serving import OUTPUT_PREDICTION as PREDICTION  # noqa: E402
from headrace.serving import OUTPUT_SCORE as SCORE  # noqa: E402
from headrace.serving.config import serve_spec_from_dict  # noqa: E402
from headrace.serving.grpc_server import GrpcServer  # noqa: E402
from headrace.serving.server import build_app  # noqa: E402
from support.models import N_FEATURES, ModelFiles, draft_from, write_sklearn_release  # noqa: E402

TOKEN = "inference-token-0123456789"  # noqa: S105 (a test token)
MANAGEMENT = "management-token-0123456789"


@dataclass
class Served:
    """A running server: its gRPC address, the model's files, and its app."""

    url: str
    files: ModelFiles
    app: Any


class _LoopThread:
    """The server's event loop in a thread, as `headrace serve` runs it in the main one."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="grpc-test-loop")
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def _serve(tmp_path: Path, files: ModelFiles, config: dict[str, Any]) -> Iterator[Served]:
    home = tmp_path / "home"
    registry = Registry(
        f"sqlite:///{home / 'registry.db'}",
        artifacts=f"file://{home / 'artifacts'}",
        actor="test",
        cache_dir=home / "cache",
    )
    with registry:
        registry.register(draft_from(files, tmp_path), alias="champion")
        settings = serve_spec_from_dict(
            {"host": "127.0.0.1", "port": 0, **config}, where="test config"
        )
        app = build_app(registry, settings)
        server = GrpcServer(app.dataplane, host="127.0.0.1", port=0)
        server.attach()
        loop = _LoopThread()
        try:
            loop.run(app.startup())
            yield Served(url=f"127.0.0.1:{server.port}", files=files, app=app)
        finally:
            loop.run(app.shutdown())
            loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("grpc")
    files = write_sklearn_release(tmp_path / "model")
    yield from _serve(tmp_path, files, {})


@pytest.fixture
def client(served: Served) -> Iterator[Any]:
    with grpcclient.InferenceServerClient(url=served.url) as client:
        yield client


def _matrix_input(x: np.ndarray, *, datatype: str = "FP64") -> Any:
    tensor = grpcclient.InferInput("input-0", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def _expected(files: ModelFiles, x: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """The model called directly, with the release config's threshold and labels."""
    model = joblib.load(files.model)
    scores = model.predict_proba(x)[:, 1]
    labels = [b"fraud" if s >= 0.5 else b"legit" for s in scores]
    return labels, scores


def _error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_predictions_are_the_models_own(
    served: Served, client: Any, rng: np.random.Generator
) -> None:
    x = rng.normal(0, 1, size=(37, N_FEATURES))
    result = client.infer("fraud", [_matrix_input(x)])
    labels, scores = _expected(served.files, x)
    assert result.as_numpy(PREDICTION).tolist() == labels
    np.testing.assert_allclose(result.as_numpy(SCORE), scores, rtol=1e-12)
    response = result.get_response()
    assert response.model_name == "fraud" and response.model_version == "1"
    assert response.parameters["release"].string_param == "fraud:1"
    assert len(response.parameters["release_digest"].string_param) == 64


def test_one_named_input_per_field(served: Served, client: Any, rng: np.random.Generator) -> None:
    x = rng.normal(0, 1, size=(5, N_FEATURES))
    inputs = []
    for j in range(N_FEATURES):
        tensor = grpcclient.InferInput(f"f{j}", [5], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(x[:, j]))
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput(SCORE)]
    result = client.infer("fraud", inputs, model_version="1", outputs=outputs)
    _, scores = _expected(served.files, x)
    np.testing.assert_allclose(result.as_numpy(SCORE), scores, rtol=1e-12)
    assert result.as_numpy(PREDICTION) is None


def test_concurrent_requests_each_get_their_own_rows(
    served: Served, rng: np.random.Generator
) -> None:
    """Requests merged into one batch by the batcher are split back correctly."""
    batches = [rng.normal(0, 1, size=(int(n), N_FEATURES)) for n in rng.integers(1, 9, 24)]
    answers: dict[int, Any] = {}
    done = threading.Event()

    def callback(index: int, result: Any, error: Any) -> None:
        answers[index] = error if error is not None else result.as_numpy(SCORE)
        if len(answers) == len(batches):
            done.set()

    with grpcclient.InferenceServerClient(url=served.url) as client:
        for i, x in enumerate(batches):
            client.async_infer("fraud", [_matrix_input(x)], callback=partial(callback, i))
        assert done.wait(30)
    for i, x in enumerate(batches):
        np.testing.assert_allclose(answers[i], _expected(served.files, x)[1], rtol=1e-12)


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud") and client.is_model_ready("fraud", "1")
    server = client.get_server_metadata()
    assert server.name == "headrace" and "model_repository" in server.extensions
    meta = client.get_model_metadata("fraud")
    assert meta.name == "fraud" and list(meta.versions) == ["1"] and meta.platform == "sklearn"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (f"f{j}", "FP64", [-1]) for j in range(N_FEATURES)
    ]
    assert [t.name for t in meta.outputs][:1] == [PREDICTION]


def test_repository_unload_then_load(client: Any, rng: np.random.Generator) -> None:
    index = client.get_model_repository_index()
    assert [(m.name, m.version, m.state) for m in index.models] == [("fraud", "1", "READY")]
    client.unload_model("fraud")
    assert not client.is_model_ready("fraud")
    error = _error(lambda: client.infer("fraud", [_matrix_input(np.zeros((1, N_FEATURES)))]))
    assert error.status() == "StatusCode.UNAVAILABLE" and "unloaded" in error.message()
    client.load_model("fraud")
    assert client.is_model_ready("fraud")
    x = rng.normal(0, 1, size=(2, N_FEATURES))
    assert client.infer("fraud", [_matrix_input(x)]).as_numpy(SCORE).shape == (2,)


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        pytest.param(
            lambda c: c.infer("nope", [_matrix_input(np.zeros((1, N_FEATURES)))]),
            "NOT_FOUND",
            "Model 'nope' not found",
            id="unknown model",
        ),
        pytest.param(
            lambda c: c.infer("fraud", [_matrix_input(np.zeros((1, N_FEATURES)))], "9"),
            "NOT_FOUND",
            "Version '9' of model 'fraud' does not exist",
            id="unknown version",
        ),
        pytest.param(
            lambda c: c.infer("fraud", [_matrix_input(np.zeros((2, 4)))]),
            "INVALID_ARGUMENT",
            "shape [2, 4]",
            id="wrong shape",
        ),
        pytest.param(
            lambda c: c.infer(
                "fraud",
                [_matrix_input(np.full((1, N_FEATURES), "x", dtype=object), datatype="BYTES")],
            ),
            "INVALID_ARGUMENT",
            "f0",
            id="wrong datatype",
        ),
        pytest.param(
            lambda c: c.infer("fraud", [_matrix_input(np.full((1, N_FEATURES), 1e6))]),
            "INVALID_ARGUMENT",
            "row 0",
            id="out of range",
        ),
        pytest.param(
            lambda c: c.infer("fraud", [_matrix_input(np.full((1, N_FEATURES), np.nan))]),
            "INVALID_ARGUMENT",
            "row 0",
            id="NaN",
        ),
        pytest.param(
            lambda c: c.infer(
                "fraud",
                [_matrix_input(np.zeros((1, N_FEATURES)))],
                outputs=[grpcclient.InferRequestedOutput("nope")],
            ),
            "INVALID_ARGUMENT",
            "output 'nope'",
            id="unknown output",
        ),
        pytest.param(
            lambda c: c.get_model_metadata("nope"),
            "NOT_FOUND",
            "Model 'nope' not found",
            id="metadata of unknown model",
        ),
    ],
)
def test_bad_requests_get_their_code_and_the_server_keeps_serving(
    served: Served, client: Any, make: Any, code: str, words: str
) -> None:
    error = _error(lambda: make(client))
    assert error.status() == f"StatusCode.{code}", error.message()
    assert words in error.message()
    x = np.zeros((1, N_FEATURES))
    assert client.infer("fraud", [_matrix_input(x)]).as_numpy(SCORE).shape == (1,)


def test_a_message_past_the_body_limit_is_resource_exhausted(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    files = write_sklearn_release(tmp_path / "model")
    for served in _serve(tmp_path, files, {"limits": {"max_body_bytes": 4096}}):
        with grpcclient.InferenceServerClient(url=served.url) as client:
            big = _matrix_input(rng.normal(0, 1, size=(200, N_FEATURES)))
            error = _error(lambda: client.infer("fraud", [big]))  # noqa: B023 (called at once)
            assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
            small = _matrix_input(rng.normal(0, 1, size=(2, N_FEATURES)))
            assert client.infer("fraud", [small]).as_numpy(SCORE).shape == (2,)


def test_tokens_guard_inference_and_repository(tmp_path: Path) -> None:
    files = write_sklearn_release(tmp_path / "model")
    auth = {"auth": {"inference_token": TOKEN, "management_token": MANAGEMENT}}
    x = _matrix_input(np.zeros((1, N_FEATURES)))
    for served in _serve(tmp_path, files, auth):
        with grpcclient.InferenceServerClient(url=served.url) as client:
            assert client.is_server_live()  # health is open
            error = _error(lambda: client.infer("fraud", [x]))
            assert error.status() == "StatusCode.UNAUTHENTICATED"
            assert "inference bearer token" in error.message() and TOKEN not in error.message()
            wrong = {"authorization": f"Bearer {MANAGEMENT}"}
            error = _error(lambda: client.infer("fraud", [x], headers=wrong))  # noqa: B023
            assert "the token sent is not it" in error.message()
            good = {"authorization": f"Bearer {TOKEN}"}
            assert client.infer("fraud", [x], headers=good).as_numpy(SCORE).shape == (1,)
            for scheme in ("bearer", "BEARER"):  # RFC 7235: the scheme in any case
                header = {"authorization": f"{scheme} {TOKEN}"}
                assert client.infer("fraud", [x], headers=header).as_numpy(SCORE).shape == (1,)
            error = _error(lambda: client.get_model_repository_index(headers=good))  # noqa: B023
            assert error.status() == "StatusCode.UNAUTHENTICATED"
            management = {"authorization": f"Bearer {MANAGEMENT}"}
            assert len(client.get_model_repository_index(headers=management).models) == 1


def test_unimplemented_rpcs_say_so(client: Any) -> None:
    error = _error(lambda: client.get_model_config("fraud"))
    assert error.status() == "StatusCode.UNIMPLEMENTED"


def test_importing_serving_does_not_import_grpc() -> None:
    code = (
        "import sys, headrace.serving, headrace.serving.server; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc' "
        "or m.startswith('google.protobuf')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_a_taken_port_is_a_clear_error(served: Served) -> None:
    from headrace.errors import ConfigError

    taken = int(served.url.rsplit(":", 1)[1])
    server = GrpcServer(served.app.dataplane, host="127.0.0.1", port=taken)
    with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{taken} \(grpc_port\)"):
        asyncio.run(server.start())


# KServe's client, in a process of its own: its generated stubs and tritonclient's both
# claim `inference.*` in protobuf's descriptor pool, so they cannot be imported together.
KSERVE_CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

async def main(url, rows):
    client = InferenceGRPCClient(url=url, timeout=30, retries=0)
    x = np.array(rows, dtype=np.float64)
    tensor = InferInput("input-0", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    response = await client.infer(InferRequest("fraud", [tensor]))
    answer = {
        "live": await client.is_server_live(),
        "ready": await client.is_model_ready("fraud"),
        "model": response.model_name,
        "outputs": {o.name: o.as_numpy().tolist() for o in response.outputs},
    }
    try:
        await client.infer(InferRequest("nope", [tensor]))
    except Exception as exc:
        answer["unknown"] = str(exc)
    await client.close()
    print(json.dumps(answer, default=lambda v: v.decode() if isinstance(v, bytes) else str(v)))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""


def test_kserve_client_gets_the_models_predictions(
    served: Served, rng: np.random.Generator
) -> None:
    if importlib.util.find_spec("kserve") is None:  # never import it here (see above)
        pytest.skip("kserve is not installed: pip install -e '.[dev]'")
    x = rng.normal(0, 1, size=(6, N_FEATURES))
    done = subprocess.run(
        [sys.executable, "-c", KSERVE_CLIENT, served.url, json.dumps(x.tolist())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    labels, scores = _expected(served.files, x)
    assert answer["live"] is True and answer["ready"] is True and answer["model"] == "fraud"
    assert answer["outputs"][PREDICTION] == [label.decode() for label in labels]
    np.testing.assert_allclose(answer["outputs"][SCORE], scores, rtol=1e-12)
    assert "NOT_FOUND" in answer["unknown"] and "Model 'nope' not found" in answer["unknown"]
