"""The data plane on its own: no HTTP app in the process, one real registry and release.

What a request means lives in `DataPlane` (issue 11), so it answers inference, metadata,
readiness and the repository index by itself, and the gRPC server needs nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest

from headrace.registry import Registry
from headrace.serving.codec import InputTensor
from headrace.serving.config import serve_spec_from_dict
from headrace.serving.dataplane import DataPlane
from headrace.serving.errors import InvalidInputError
from headrace.serving.metrics import ServerMetrics, new_registry
from headrace.serving.repository import ModelRepository
from support.models import ModelFiles, draft_from, local_registry, write_sklearn_release


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, ModelFiles]]:
    root = tmp_path_factory.mktemp("dataplane")
    files = write_sklearn_release(root / "model")
    with local_registry(root / "home") as registry:
        registry.register(draft_from(files, Path(root)), alias="champion")
        yield registry, files


def _dataplane(registry: Registry) -> DataPlane:
    config = serve_spec_from_dict({"port": 0}, where="test")
    metrics_registry = new_registry()
    repository = ModelRepository(registry, metrics_registry=metrics_registry)
    metrics = ServerMetrics(metrics_registry)
    return DataPlane(repository, config=config, metrics=metrics)


async def _until_ready(plane: DataPlane) -> None:
    async with asyncio.timeout(60):
        while not plane.is_ready():
            await asyncio.sleep(0.01)


def test_the_data_plane_answers_without_a_transport(
    release: tuple[Registry, ModelFiles],
) -> None:
    registry, files = release
    x = files.features[:7]

    async def main() -> None:
        plane = _dataplane(registry)
        assert not plane.is_ready()  # not started
        await plane.startup()
        try:
            await _until_ready(plane)  # the first load runs in the background
            tensor = InputTensor(name="x", datatype="FP64", shape=x.shape, data=x)
            part, outputs = await plane.infer("fraud", None, [tensor])
            assert part.release == "fraud:1" and plane.served == {"fraud"}
            scores = joblib.load(files.model).predict_proba(x)[:, 1]
            answer = {o.name: o.data for o in outputs}
            np.testing.assert_allclose(answer["score"], scores, rtol=1e-12)
            assert list(answer["prediction"]) == ["fraud" if s >= 0.5 else "legit" for s in scores]
            meta = await plane.metadata("fraud", None)
            assert [t.name for t in meta.outputs] == ["prediction", "score", "probabilities"]
            assert await plane.model_ready("fraud", None)
            assert [s.name for s in plane.index(only_ready=True)] == ["fraud"]
            with pytest.raises(InvalidInputError, match="has shape"):
                bad = InputTensor(name="x", datatype="FP64", shape=(1, 2), data=np.zeros((1, 2)))
                await plane.infer("fraud", None, [bad])
        finally:
            await plane.shutdown()
        assert plane.stopping and not plane.is_ready()

    asyncio.run(main())


def test_grpc_serves_a_data_plane_alone(release: tuple[Registry, ModelFiles]) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from headrace.serving.grpc_server import GrpcServer

    registry, files = release
    x = files.features[:3]

    async def main() -> list[float]:
        plane = _dataplane(registry)
        server = GrpcServer(plane, host="127.0.0.1", port=0)
        server.attach()
        await plane.startup()
        try:
            await _until_ready(plane)
            assert plane.grpc_port == server.port

            def call() -> list[float]:
                with grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.port}") as client:
                    tensor = grpcclient.InferInput("input-0", list(x.shape), "FP64")
                    tensor.set_data_from_numpy(x)
                    result = client.infer("fraud", [tensor])
                    scores: list[float] = result.as_numpy("score").tolist()
                    return scores

            return await asyncio.to_thread(call)
        finally:
            await plane.shutdown()

    scores = asyncio.run(main())
    np.testing.assert_allclose(scores, joblib.load(files.model).predict_proba(x)[:, 1], rtol=1e-12)
