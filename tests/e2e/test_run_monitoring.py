"""`headrace run` with tracing and samples configured: spans reach an OTLP endpoint set the
standard way, samples land in Parquet under the home directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support.models import draft_from, local_registry, write_sklearn_release
from support.otlp import otlp_receiver


@pytest.fixture
def home(tmp_path: Path) -> Path:
    files = write_sklearn_release(tmp_path / "model")
    home = tmp_path / "home"
    with local_registry(home, actor="e2e") as registry:
        registry.register(draft_from(files, tmp_path), alias="champion")
    return home


def test_run_exports_spans_over_otlp_and_writes_samples(
    home: Path, tmp_path: Path, free_tcp_port: int
) -> None:
    events = tmp_path / "events.jsonl"
    lines = []
    for i in range(30):
        if i % 10 == 4:
            lines.append(f'{{"event_id": "e{i}", "f0": "oops"}}')
        else:
            fields = ", ".join(f'"f{j}": {(i % 10) / 10 + j}' for j in range(5))
            lines.append(f'{{"event_id": "e{i}", {fields}}}')
    events.write_text("\n".join(lines) + "\n")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "name: scoring\n"
        "model: fraud@champion\n"
        f"source: {{url: 'file://{events}', group: scoring}}\n"
        f"outputs: [{{url: 'file://{tmp_path / 'scores.jsonl'}'}}]\n"
        f"dead_letter: {{url: 'file://{tmp_path / 'dlq.jsonl'}'}}\n"
        "id_field: event_id\n"
        "tracing: {sample_ratio: 1.0}\n"
        "samples: {ratio: 1.0}\n"
    )
    with otlp_receiver(free_tcp_port) as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADRACE_", "OTEL_"))}
        done = subprocess.run(
            [sys.executable, "-m", "headrace", "run", str(spec), "--until-end"],
            capture_output=True,
            text=True,
            env={**env, "HEADRACE_HOME": str(home), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        spans = receiver.spans()
    assert {resource["service.name"] for resource, _ in spans} == {"scoring"}
    processes = [span for _, span in spans if span.name == "scoring process"]
    assert len(processes) == 30
    failed = [s for s in processes if s.status.code == s.status.STATUS_CODE_ERROR]
    assert len(failed) == 3 and all("f0" in s.status.message for s in failed)
    names = sorted({span.name for _, span in spans})
    assert names == sorted(
        ["scoring process", "decode", "validate", "predict", "postprocess", "send", "settle"]
    )
    rows = [
        r
        for f in (home / "samples" / "scoring").glob("*.parquet")
        for r in pq.read_table(f).to_pylist()
    ]
    assert len(rows) == 30
    assert sorted(r["outcome"] for r in rows).count("dead_letter") == 3
