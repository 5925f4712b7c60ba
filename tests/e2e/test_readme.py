"""The README as a user follows it: the curl example against the quickstart model, as
written, and links that stay inside the repository."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support.cli import clean_env, headrace
from support.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def readme_curl() -> str:
    """The README's curl command for the quickstart model: its lines up to the comment
    that shows the answer."""
    text = README.read_text()
    start = text.index("curl -s localhost:8080/v2/models/fraud/infer")
    lines = []
    for line in text[start:].splitlines():
        if line.startswith(("#", "```")):
            break
        lines.append(line)
    return "\n".join(lines)


def _headrace(home: Path, *args: str) -> None:
    done = headrace(home, *args)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not Path("/usr/bin/curl").exists(), reason="curl missing: apt-get install curl")
def test_the_readme_curl_example_works_against_the_quickstart_model(tmp_path: Path) -> None:
    out, home = tmp_path / "out", tmp_path / "home"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_fraud.py"), str(out), "--rows", "3000"],
        check=True, timeout=180, capture_output=True,
    )  # fmt: skip
    _headrace(
        home, "register", str(out / "model.pkl"), "--name", "fraud",
        "--schema", str(out / "schema.yaml"), "--data", str(out / "train.parquet"),
        "--metrics", str(out / "metrics.json"), "--config", str(out / "config.yaml"),
        "--alias", "champion",
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "headrace", "serve", "--port", str(port)],
        env=clean_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready") as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the server did not get ready within 60 s"
            time.sleep(0.1)
        command = readme_curl()
        assert "localhost:8080" in command  # the port `headrace serve` listens on by default
        answer = subprocess.run(
            ["bash", "-c", command.replace("localhost:8080", f"127.0.0.1:{port}")],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    finally:
        server.terminate()
        server.communicate(timeout=30)
    body = json.loads(answer)
    assert body["model_name"] == "fraud" and body["parameters"]["release"] == "fraud:1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["prediction"]["shape"] == [2]
    assert set(outputs["prediction"]["data"]) <= {"legit", "fraud"}
    assert all(0.0 <= s <= 1.0 for s in outputs["score"]["data"])
    # the request is the one-tensor-per-field form, one datatype per field
    request = json.loads(command.split("-d '", 1)[1].rsplit("'", 1)[0])
    assert {i["datatype"] for i in request["inputs"]} == {"FP64", "INT64", "BYTES", "BOOL"}


def test_the_readme_links_nothing_outside_the_repository() -> None:
    text = README.read_text()
    assert not re.search(r"(?<!\.)\.\./", text)  # "../x", not ".../load"
    targets = re.findall(r"\]\(([^)]+)\)", text)
    for target in targets:
        assert not re.match(r"[a-z]+://", target), target
        assert (ROOT / target.split("#")[0]).exists(), target
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", text)
