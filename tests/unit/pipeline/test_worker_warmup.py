"""Issue 11, one loader: a worker warms its release up as the server does.

The model is a real ``python``-flavor release that appends one line per call (rows and the
sum of its first column) to a file: the worker must have called it on the release's
reference sample before the first event, and the warm-up must say in the log how long it
took.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from headrace.inference.loading import WARMUP_ROWS
from headrace.pipeline.build import build_worker
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.streams.base import OutRecord
from headrace.streams.memory import broker
from support.models import N_FEATURES, local_registry
from support.recording import CALLS_ENV, calls, register_recording_model


def test_the_worker_scores_the_reference_sample_before_the_first_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "calls.txt"
    monkeypatch.setenv(CALLS_ENV, str(log))
    caplog.set_level(logging.INFO, logger="headrace.pipeline.build")
    with local_registry(tmp_path / "home") as registry:
        release = register_recording_model(registry, tmp_path)
        profile = release.manifest.profile
        assert profile is not None and profile.sample is not None
        table = pq.read_table(registry.fetch(release) / profile.sample.path)
        reference = table.slice(0, WARMUP_ROWS)
        name = f"warm-{uuid.uuid4().hex[:8]}"
        memory = broker(name)
        memory.create_topic("events", partitions=1)
        event: dict[str, Any] = {"event_id": "e0", **{f"f{j}": 1.5 for j in range(N_FEATURES)}}
        memory.append("events", [OutRecord(value=orjson.dumps(event))])
        spec = pipeline_spec_from_dict(
            {
                "name": "scoring",
                "model": "recorder@champion",
                "source": {"url": f"memory://{name}/events", "group": "scoring"},
                "outputs": [{"url": f"memory://{name}/scores"}],
                "dead_letter": {"url": f"memory://{name}/dlq"},
                "id_field": "event_id",
            }
        )
        worker = build_worker(spec, registry=registry, home=tmp_path / "home")

        # Warmed before any event: one call, on the first reference rows.
        ((rows, total),) = calls(log)
        assert rows == reference.num_rows == min(WARMUP_ROWS, table.num_rows) > 0
        assert total == pytest.approx(float(sum(reference.column("f0").to_pylist())))
        (message,) = [r.getMessage() for r in caplog.records if "warm-up" in r.getMessage()]
        assert f"warm-up {rows} rows in " in message and message.endswith(" ms")

        worker.run(max_events=1)
        assert calls(log)[1:] == [(1, 1.5)]  # then the event, on its own
        assert len(broker(name).messages("scores")) == 1
