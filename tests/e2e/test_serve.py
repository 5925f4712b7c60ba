"""``headrace serve CONFIG``: the command as a user runs it, from config file to clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import requests

from conftest import LOCALHOST, free_port, start_process, stop_process, wait_for_port
from headrace.registry import Registry
from support.serving import ServedModels, register_models

TOKEN = "e2e-inference-token-0123456789"  # noqa: S105 - a test token


def registered(tmp_path: Path) -> tuple[Path, ServedModels]:
    home = tmp_path / "home"
    with Registry(
        f"sqlite:///{home / 'registry.db'}",
        artifacts=f"file://{home / 'artifacts'}",
        actor="e2e",
        cache_dir=home / "cache",
    ) as registry:
        models = register_models(registry, tmp_path / "models")
    return home, models


def command(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "headrace", "--home", str(home), "serve", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    return {**env, **extra}


def body(rows: Any) -> dict[str, Any]:
    rows = np.asarray(rows, dtype=np.float64)
    return {
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}
        ]
    }


def test_serve_a_config_file_and_stop_gracefully(tmp_path: Path) -> None:
    home, models = registered(tmp_path)
    config = tmp_path / "serve.yaml"
    config.write_text(
        "models: [fraud, lab]\n"
        "batching: {max_batch_size: 32, max_batch_time_ms: 1}\n"
        "limits: {timeout_s: 10}\n"
        "auth: {inference_token: '${HEADRACE_E2E_TOKEN}'}\n"
    )
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start_process(
        command(home, str(config), "--host", LOCALHOST, "--port", str(port)),
        log=log,
        env=clean_env(HEADRACE_E2E_TOKEN=TOKEN),
    )
    url = f"http://{LOCALHOST}:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_for_port(proc, port, name="headrace serve", log=log, timeout=60)
        rows = models.fraud_v1.features[:10]
        answer = requests.post(
            f"{url}/v2/models/fraud/infer", json=body(rows), headers=auth, timeout=30
        )
        assert answer.status_code == 200, answer.text
        scores = next(o["data"] for o in answer.json()["outputs"] if o["name"] == "score")
        direct = joblib.load(models.fraud_v1.model).predict_proba(rows)[:, 1]
        np.testing.assert_allclose(scores, direct, rtol=1e-12)
        refused = requests.post(f"{url}/v2/models/fraud/infer", json=body(rows), timeout=30)
        assert refused.status_code == 401
        # fraud:2 is registered but the name list and alias keep it to fraud@champion
        assert requests.get(f"{url}/v2/models/nope", headers=auth, timeout=10).status_code == 404

        # A slow request in flight when SIGTERM arrives still gets its answer.
        slow: dict[str, Any] = {}

        def send_slow() -> None:
            slow["response"] = requests.post(
                f"{url}/v2/models/lab/infer",
                json=body([[0.0, 80.0, 0.0, 0.0, 0.0]]),  # the lab model sleeps 0.8 s
                headers=auth,
                timeout=30,
            )

        sender = threading.Thread(target=send_slow)
        sender.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        sender.join()
        assert slow["response"].status_code == 200, slow["response"].text
        assert proc.wait(timeout=30) == 0, log.read_text()
        text = log.read_text()
        assert "Traceback" not in text
        assert TOKEN not in text
        assert f"HTTP http://{LOCALHOST}:{port}/v2" in text
        assert "fraud  fraud:1  (@champion)" in text and "lab    lab:1  (@champion)" in text
    finally:
        stop_process(proc)


def test_a_bad_config_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("batching: {max_batch_size: 0}\n")
    done = subprocess.run(
        command(tmp_path / "home", str(config)),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: {config}: max_batch_size must be within 1..100000 - at `$.batching.max_batch_size`"
    )
    flags = subprocess.run(
        command(tmp_path / "home", "--port", "70000"),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert flags.returncode == 1
    assert "port 70000 is not a TCP port" in flags.stderr
    assert "with command-line options" in flags.stderr


def test_serve_exits_1_when_the_port_is_taken(tmp_path: Path) -> None:
    home, _ = registered(tmp_path)
    port = free_port()
    log = tmp_path / "first.log"
    first = start_process(
        command(home, "--host", LOCALHOST, "--port", str(port)), log=log, env=clean_env()
    )
    try:
        wait_for_port(first, port, name="headrace serve", log=log, timeout=60)
        second = subprocess.run(
            command(home, "--host", LOCALHOST, "--port", str(port)),
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip() == (
            f"error: Cannot listen on {LOCALHOST}:{port}: Address already in use; choose "
            "another --port (or `port:` in the config), or stop what holds it"
        )
        assert json.loads(
            requests.get(f"http://{LOCALHOST}:{port}/v2/health/live", timeout=10).text
        ) == {"live": True}
    finally:
        stop_process(first)
