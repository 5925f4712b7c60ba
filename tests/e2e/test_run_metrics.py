"""`headrace run --metrics-port`: a worker process serves /metrics while it scores, and a
`headrace rollback` made by another process shows up in its rollback counter."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port
from support.cli import clean_env, headrace
from support.models import draft_from, local_registry, write_sklearn_release


@pytest.fixture
def home(tmp_path: Path) -> Path:
    files = write_sklearn_release(tmp_path / "model")
    home = tmp_path / "home"
    with local_registry(home, actor="e2e") as registry:
        registry.register(draft_from(files, tmp_path), alias="champion")
        registry.register(draft_from(files, tmp_path), alias="champion", allow_duplicate=True)
    return home


def pipeline(tmp_path: Path, events: int, *, bad_every: int) -> Path:
    with (tmp_path / "events.jsonl").open("w") as handle:
        for i in range(events):
            row: dict[str, object] = {"event_id": f"e{i}", **{f"f{j}": j / 10 for j in range(5)}}
            if i % bad_every == 0:
                row["f0"] = "oops"
            handle.write(json.dumps(row) + "\n")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "name: scoring\n"
        "model: fraud@champion\n"
        f"source: {{url: 'file://{tmp_path / 'events.jsonl'}', options: {{follow: true}}}}\n"
        f"outputs: [{{url: 'file://{tmp_path / 'scores.jsonl'}'}}]\n"
        f"dead_letter: {{url: 'file://{tmp_path / 'dlq.jsonl'}'}}\n"
        "id_field: event_id\n"
        "stats_interval_s: 0.2\n"
    )
    return spec


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - a local URL
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def worker(home: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    spec = pipeline(tmp_path, 200, bad_every=20)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "headrace", "run", str(spec), "--metrics-port", str(port)],
        env=clean_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}/metrics"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def test_a_running_worker_serves_its_metrics_and_sees_a_rollback(
    home: Path, worker: tuple[subprocess.Popen[str], str]
) -> None:
    proc, url = worker
    release = frozenset({("pipeline", "scoring"), ("model", "fraud"), ("release", "fraud:2")})
    deadline = time.monotonic() + 90
    got: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            got = scrape(url)
        except OSError:
            got = {}  # not listening yet: the release is still loading
        if got.get(("headrace_pipeline_events_in_total", release)) == 200:
            break
        time.sleep(0.2)
    assert got.get(("headrace_pipeline_events_in_total", release)) == 200
    assert got[("headrace_pipeline_events_out_total", release)] == 190
    assert got[("headrace_pipeline_dead_letters_total", release | {("stage", "validate")})] == 10
    assert got[("headrace_pipeline_model_load_seconds", release)] > 0
    assert got[("headrace_pipeline_model_memory_bytes", release)] > 0
    assert got[("headrace_pipeline_cpu_seconds_total", release)] > 0
    assert got[("process_resident_memory_bytes", frozenset())] > 0
    assert got[("headrace_rollbacks_total", frozenset({("model", "fraud")}))] == 0

    rollback = subprocess.run(
        [sys.executable, "-m", "headrace", "rollback", "fraud"],
        env=clean_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rollback.returncode == 0, rollback.stderr
    assert scrape(url)[("headrace_rollbacks_total", frozenset({("model", "fraud")}))] == 1

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"metrics at {url}" in err
    with pytest.raises(OSError):
        scrape(url)  # the metrics server stopped with the worker


def test_a_taken_metrics_port_is_one_clear_error(home: Path, tmp_path: Path) -> None:
    spec = pipeline(tmp_path, 10, bad_every=100)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = headrace(home, "run", str(spec), "--metrics-port", str(port))
    assert done.returncode == 1
    assert f"error: Cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_metrics_host_or_port_is_refused(home: Path, tmp_path: Path) -> None:
    spec = pipeline(tmp_path, 10, bad_every=100)
    host = headrace(
        home, "run", str(spec), "--metrics-port", "0", "--metrics-host", "no-such-host.invalid"
    )
    assert host.returncode == 1
    assert "Cannot serve metrics on no-such-host.invalid:0" in host.stderr
    assert "--metrics-host" in host.stderr
    port = headrace(home, "run", str(spec), "--metrics-port", "70000")
    assert port.returncode == 2  # a usage error, before anything starts
    assert "--metrics-port" in port.stderr
