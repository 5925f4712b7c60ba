"""promtool over what headrace ships and exposes: the rules and their unit tests, the
example config, the dashboards' queries, and the live expositions of a worker and a server
that handled good and bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import requests
import yaml

from conftest import service_unavailable
from headrace.inference.service import InferenceService
from headrace.monitoring.metrics import DriftMetrics, WorkerMetrics, new_registry, serve_metrics
from headrace.pipeline.dedupe import MemoryDedupe
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.pipeline.worker import Worker
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.testing import ConstantModel, FailingModel
from headrace.streams.base import OutRecord
from headrace.streams.memory import MemorySink, MemorySource, broker
from support.models import local_registry
from support.serving import free_port, register_models, running_server

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        service_unavailable("promtool", "PATH", "apt-get install -y prometheus")
    return path


def run(promtool: str, *args: str, stdin: bytes | None = None, cwd: Path = ROOT) -> str:
    """Run promtool; fail with everything it said unless it exits 0."""
    done = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, cwd=cwd, timeout=300, check=False
    )
    said = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{said}"
    return said


# -- what deploy/ ships --------------------------------------------------------------------


def test_rules_are_valid(promtool: str) -> None:
    said = run(promtool, "check", "rules", "recording.yml", "alerts.yml", cwd=PROMETHEUS)
    assert said.count("SUCCESS") == 2


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    tests = sorted(p.name for p in (PROMETHEUS / "tests").glob("*_test.yml"))
    assert tests == ["alerts_test.yml", "budget_test.yml", "sli_test.yml", "slo_test.yml"]
    said = run(promtool, "test", "rules", *tests, cwd=PROMETHEUS / "tests")
    assert said.count("SUCCESS") == len(tests)


def test_a_broken_expectation_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: one wrong number in an expectation is caught."""
    for name in ("recording.yml", "alerts.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    (tmp_path / "tests").mkdir()
    text = (PROMETHEUS / "tests" / "slo_test.yml").read_text()
    assert text.count("burns its error budget 17.1x") == 1
    broken = text.replace("burns its error budget 17.1x", "burns its error budget 17.2x")
    (tmp_path / "tests" / "slo_test.yml").write_text(broken)
    done = subprocess.run(
        [promtool, "test", "rules", "slo_test.yml"],
        cwd=tmp_path / "tests",
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert b"17.1x" in done.stdout + done.stderr


def test_example_config_is_valid(promtool: str) -> None:
    said = run(promtool, "check", "config", "prometheus.example.yml", cwd=PROMETHEUS)
    assert "is valid prometheus config file syntax" in said


def _grafana_to_promql(expr: str) -> str:
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1d")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    rules = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        stack = list(board["panels"])
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                record = f"dashboard:{path.stem.replace('-', '_')}:q{len(rules)}"
                rules.append({"record": record, "expr": _grafana_to_promql(target["expr"])})
    assert len(rules) > 30
    file = tmp_path / "dashboards.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    run(promtool, "check", "rules", str(file))


# -- live expositions ----------------------------------------------------------------------

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float", min=0, max=1000),
        Field(name="merchant", type="category", values=["food", "travel"]),
    ]
)


def _event(i: int, **override: Any) -> bytes:
    body = {"event_id": f"e{i}", "amount": float(i % 900), "merchant": "food", **override}
    return orjson.dumps(body)


def test_a_worker_exposition_that_saw_bad_events_passes_promtool(promtool: str) -> None:
    name = f"prom-{uuid.uuid4().hex[:8]}"
    memory = broker(name)
    memory.create_topic("events", partitions=2)
    values = [_event(i) for i in range(300)] + [
        b"not json",
        _event(1000, amount="12"),
        _event(1001, amount=5000.0),
        _event(1002, amount=777.0),  # the model raises on it
        _event(5),  # a repeat
    ]
    memory.append("events", [OutRecord(value=v, key=str(i).encode()) for i, v in enumerate(values)])
    spec = pipeline_spec_from_dict(
        {
            "name": "scoring",
            "model": "fraud:1",
            "source": {"url": f"memory://{name}/events", "group": "scoring"},
            "outputs": [{"url": f"memory://{name}/scores"}],
            "dead_letter": {"url": f"memory://{name}/dlq"},
            "id_field": "event_id",
            "batch": {"max_size": 64, "max_wait_ms": 1},
            "stats_interval_s": 0.0,
        }
    )
    registry = new_registry()
    metrics = WorkerMetrics(registry, pipeline="scoring")
    drift = DriftMetrics(registry, pipeline="scoring")
    model = FailingModel(
        fail_when=lambda m: np.asarray(m[:, 0], dtype=float) == 777.0,
        model=ConstantModel(0.25),
        message="poison",
    )
    service = InferenceService(
        model,
        schema=SCHEMA,
        inputs=["amount", "merchant"],
        config=ReleaseConfig(task="regression"),
        release="fraud:1",
        release_digest="d" * 64,
    )
    worker = Worker(
        spec,
        service=service,
        source=MemorySource(f"memory://{name}/events", group="scoring"),
        outputs=[MemorySink(f"memory://{name}/scores")],
        dead_letter=MemorySink(f"memory://{name}/dlq"),
        dedupe=MemoryDedupe(ttl_s=60, max_keys=1000),
        metrics=metrics,
    )
    metrics.observe_load("fraud:1", seconds=0.3, memory_bytes=1 << 20)
    stats = worker.run(max_events=len(values))
    drift.observe_p_values("fraud:1", {"amount": 0.2, "merchant": 0.9})
    drift.observe_alarm("fraud:1", ["amount"])
    assert stats.dead_letters == 4 and stats.deduplicated == 1

    server = serve_metrics(registry, port=0)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as answer:  # noqa: S310 - local
            body = answer.read()
    finally:
        server.close()
    assert b'stage="predict"' in body and b"headrace_drift_alarms_total" in body
    run(promtool, "check", "metrics", stdin=body)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    with local_registry(tmp_path) as registry:
        register_models(registry, tmp_path / "models")
        with running_server(registry, port=free_port()) as server:
            yield server.url


def test_a_server_exposition_that_saw_bad_requests_passes_promtool(
    promtool: str, served: str
) -> None:
    def infer(model: str, rows: list[list[float]]) -> int:
        body = {
            "inputs": [{"name": "x", "shape": [len(rows), 5], "datatype": "FP64", "data": rows}]
        }
        return requests.post(f"{served}/v2/models/{model}/infer", json=body, timeout=30).status_code

    statuses = {
        infer("fraud", [[0.1, 0.2, 0.3, 0.4, 0.5]] * 3),
        infer("lab", [[1.0, 1.0, 1.0, 1.0, 1.0]]),
        infer("lab", [[99.0, 1.0, 1.0, 1.0, 1.0]]),  # the model raises on it
        infer("nobody", [[1.0] * 5]),
        requests.post(f"{served}/v2/models/fraud/infer", data=b"{", timeout=30).status_code,
    }
    assert 200 in statuses and 404 in statuses and 400 in statuses
    body = requests.get(f"{served}/metrics", timeout=10).content
    assert b'headrace_http_requests_total{endpoint="infer",model="fraud",status="200"}' in body
    # The models it answered for, with their rollbacks from the registry (none yet).
    assert b'headrace_rollbacks_total{model="fraud"} 0.0' in body
    assert b'model="nobody"' not in body
    run(promtool, "check", "metrics", stdin=body)
