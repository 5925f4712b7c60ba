"""``headrace serve --grpc-port``: one process, HTTP and gRPC answering alike, clean stop."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import joblib
import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")

from conftest import LOCALHOST, free_port, start_process, stop_process, wait_for_port  # noqa: E402
from headrace.registry import Registry  # noqa: E402
from headrace.serving import OUTPUT_SCORE  # noqa: E402
from support.models import N_FEATURES, draft_from, write_sklearn_release  # noqa: E402


def test_serve_answers_over_grpc_and_http_alike(tmp_path: Path, rng: np.random.Generator) -> None:
    files = write_sklearn_release(tmp_path / "model")
    home = tmp_path / "home"
    with Registry(
        f"sqlite:///{home / 'registry.db'}",
        artifacts=f"file://{home / 'artifacts'}",
        actor="e2e",
        cache_dir=home / "cache",
    ) as registry:
        registry.register(draft_from(files, tmp_path), alias="champion")
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    command = [sys.executable, "-m", "headrace", "--home", str(home), "serve"]
    command += ["--host", LOCALHOST, "--port", str(http_port), "--grpc-port", str(grpc_port)]
    log = tmp_path / "serve.log"
    proc = start_process(command, log=log, env=env)
    try:
        # uvicorn binds HTTP after the app's start-up, which started gRPC
        wait_for_port(proc, http_port, name="headrace serve", log=log, timeout=60)
        x = rng.normal(0, 1, size=(8, N_FEATURES))
        tensor = grpcclient.InferInput("input-0", [8, N_FEATURES], "FP64")
        tensor.set_data_from_numpy(x)
        with grpcclient.InferenceServerClient(url=f"{LOCALHOST}:{grpc_port}") as client:
            assert client.is_server_live()
            over_grpc = client.infer("fraud", [tensor]).as_numpy(OUTPUT_SCORE)
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP64",
                        "shape": [8, N_FEATURES],
                        "data": x.ravel().tolist(),
                    }
                ]
            }
        ).encode()
        request = urllib.request.Request(
            f"http://{LOCALHOST}:{http_port}/v2/models/fraud/infer", data=body
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            outputs = json.loads(answer.read())["outputs"]
        over_http = next(o["data"] for o in outputs if o["name"] == OUTPUT_SCORE)
        direct = joblib.load(files.model).predict_proba(x)[:, 1]
        np.testing.assert_allclose(over_grpc, direct, rtol=1e-12)
        np.testing.assert_allclose(over_http, direct, rtol=1e-12)
        proc.send_signal(signal.SIGTERM)
        # A graceful stop: uvicorn shuts down (the gRPC server with it), then re-raises the
        # signal it caught, so the exit status may be -SIGTERM; no traceback either way.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        stop_process(proc)
