"""A real `headrace serve` server in a thread, and the releases the serving tests use."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.registry import Registry, Release
from headrace.release.bundle import build_draft
from headrace.serving import InferenceApp, ServeSpec, build_app, serve_spec_from_dict
from headrace.serving.server import uvicorn_server
from support.models import ModelFiles, draft_from, write_sklearn_release

# A python-flavor model built on the shipped fakes: it raises on rows whose f0 > 50 (a
# poison event), sleeps f1 / 100 seconds when f1 > 50 (a slow batch), else answers 1.0.
LAB_MODEL = """
import time

import numpy as np

from headrace.runtimes.testing import ConstantModel, FailingModel

_model = FailingModel(
    fail_when=lambda m: m[:, 0] > 50, model=ConstantModel(1.0), message="poison amount"
)


def predict(matrix):
    slow = matrix[:, 1] > 50
    if slow.any():
        time.sleep(float(matrix[slow, 1].max()) / 100)
    return _model.predict(matrix)
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServedModels:
    """The releases registered for the serving tests."""

    fraud_v1: ModelFiles
    fraud_v2: ModelFiles
    lab: Release


def register_models(registry: Registry, root: Path) -> ServedModels:
    """``fraud`` 1 (champion) and 2 (sklearn logistic regressions), ``lab`` 1 (champion)."""
    v1 = write_sklearn_release(root / "fraud-1", seed=7, c=1.0)
    registry.register(draft_from(v1, root / "fraud-1", "fraud"), alias="champion")
    v2 = write_sklearn_release(root / "fraud-2", seed=8, c=0.05)
    registry.register(draft_from(v2, root / "fraud-2", "fraud"))
    directory = root / "lab-model"
    directory.mkdir()
    (directory / "model.py").write_text(LAB_MODEL)
    scratch = root / "lab-scratch"
    scratch.mkdir()
    draft = build_draft(
        Path(f"{directory / 'model.py'}:predict"),
        name="lab",
        flavor="python",
        workdir=scratch,
        schema_path=v1.schema,
        data_path=v1.data,
        code_version="test",
    )
    lab = registry.register(draft, alias="champion")
    return ServedModels(fraud_v1=v1, fraud_v2=v2, lab=lab)


@dataclass
class RunningServer:
    """A live server: its base URL, the app (repository, batchers, metrics) and config."""

    url: str
    app: InferenceApp
    config: ServeSpec


@contextmanager
def running_server(
    registry: Registry, *, port: int, settings: dict[str, Any] | None = None
) -> Iterator[RunningServer]:
    """Serve `registry` on 127.0.0.1:`port` from a thread until the block exits.

    Waits until the server is ready (socket bound, the preload of the served models
    done), as a load balancer would; stops it gracefully.
    """
    config = serve_spec_from_dict({"port": port, **(settings or {})}, where="test")
    app = build_app(registry, config)
    server = uvicorn_server(app, config)
    thread = threading.Thread(target=server.run, name=f"headrace-serve-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and app.is_ready()):
        if not thread.is_alive():
            raise RuntimeError(f"the server on port {port} exited during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server on port {port} did not start within 60 s")
        time.sleep(0.01)
    scheme = "https" if config.tls is not None else "http"
    try:
        yield RunningServer(url=f"{scheme}://127.0.0.1:{port}", app=app, config=config)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
