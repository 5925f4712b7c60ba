"""Drift in a running worker on the in-process broker: a drifted stream raises exactly the
alarms expected (one per drift episode: sink record, audit, release tag; every detection
in the metrics), a stream without drift none, and the calibration is simulated once per
release and settings, then read from disk."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from headrace.errors import ConfigError, PipelineSpecError
from headrace.monitoring.drift import DRIFT_ALARM_ACTION
from headrace.monitoring.metrics import WorkerMetrics
from headrace.pipeline.build import build_worker
from headrace.pipeline.drift import CALIBRATION_DIR, DRIFT_TAG
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.registry import Registry
from headrace.streams.base import OutRecord
from headrace.streams.memory import broker
from support.models import N_FEATURES, draft_from, local_registry, synthetic, write_sklearn_release

WINDOW, STRIDE = 200, 100
CLEAN, DRIFTED = 4000, 1000
# One false alarm per million rows: a 5,000-row clean stream alarms with ~0.5% chance.
DRIFT = {
    "window": WINDOW,
    "stride": STRIDE,
    "target_run_length": 1_000_000,
    "calibration_checks": 2000,
}


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    files = write_sklearn_release(tmp_path / "model")
    with local_registry(tmp_path, actor="tester") as opened:
        opened.register(draft_from(files, tmp_path), alias="champion")
        yield opened


def stream(*, drift_at: int | None, rows: int, seed: int) -> list[bytes]:
    x, _ = synthetic(rows, seed=seed)
    if drift_at is not None:
        x[drift_at:, 0] += 1.0  # the first feature moves by one standard deviation
    return [
        orjson.dumps({"event_id": f"e{i}", **{f"f{j}": float(x[i, j]) for j in range(N_FEATURES)}})
        for i in range(rows)
    ]


def run(
    registry: Registry,
    home: Path,
    values: list[bytes],
    *,
    drift: dict[str, Any] | None = None,
    metrics: WorkerMetrics | None = None,
) -> tuple[Any, str]:
    name = f"drift-{uuid.uuid4().hex[:8]}"
    memory = broker(name)
    memory.create_topic("events", partitions=1)  # one partition: the stream's order holds
    memory.append("events", [OutRecord(value=v) for v in values])
    spec = pipeline_spec_from_dict(
        {
            "name": "scoring",
            "model": "fraud@champion",
            "source": {"url": f"memory://{name}/events", "group": "scoring"},
            "outputs": [{"url": f"memory://{name}/scores"}],
            "dead_letter": {"url": f"memory://{name}/dlq"},
            "id_field": "event_id",
            "batch": {"max_size": 128, "max_wait_ms": 1},
            "drift": {**DRIFT, "sink": {"url": f"memory://{name}/alarms"}, **(drift or {})},
        }
    )
    worker = build_worker(spec, registry=registry, home=home, metrics=metrics)
    worker.run(max_events=len(values))
    return worker, name


def test_a_drifted_stream_raises_exactly_the_expected_alarms(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    prometheus = CollectorRegistry()
    metrics = WorkerMetrics(prometheus, pipeline="scoring")
    values = stream(drift_at=CLEAN, rows=CLEAN + DRIFTED, seed=11)
    worker, name = run(registry, tmp_path / "home", values, metrics=metrics)
    watch = worker.monitors.drift
    assert watch.monitor.rows == CLEAN + DRIFTED and watch.failures == 0
    # None before the drift; the first once drifted rows fill enough of a window (a
    # check every STRIDE rows), then a detection per fresh window: the window restarts
    # after each alarm and every later window is all drifted. Only the first, which opens
    # the drift episode, is acted on; the others count as repeats.
    assert len(watch.alarms) == 1, "no alarm on a stream drifted by one standard deviation"
    (alarm,) = watch.alarms
    first = alarm["row"]
    assert CLEAN < first <= CLEAN + WINDOW and (first - WINDOW) % STRIDE == 0
    detections = list(range(first, CLEAN + DRIFTED + 1, WINDOW))
    assert watch.repeats == len(detections) - 1 > 0
    assert alarm["columns"] == ["f0"]  # only the column that moved
    assert alarm["event_id"] == f"e{first - 1}"
    assert alarm["release"] == "fraud:1" and alarm["pipeline"] == "scoring"
    assert alarm["p_values"]["f0"] < 1e-6
    # the sink got one acknowledged record for the episode
    sent = [orjson.loads(m.value) for m in broker(name).messages("alarms")]
    assert [(r["row"], r["event_id"]) for r in sent] == [(first, alarm["event_id"])]
    assert [m.key for m in broker(name).messages("alarms")] == [b"fraud:1"]
    # the audit log has the alarm and the tag, and still verifies
    audited = registry.audit_log(action=DRIFT_ALARM_ACTION)
    assert [(r.subject, r.details["row"]) for r in audited] == [("fraud:1", first)]
    assert len(registry.audit_log(action="release.tag")) == 1
    assert registry.verify_audit() == 2 + 2
    tag = registry.release_tags("fraud:1")[DRIFT_TAG]
    assert tag.startswith("alarm at ") and tag.endswith(f": f0 (event e{first - 1})")
    # metrics: every detection per column, and the last check's p-values per column
    labels = {"pipeline": "scoring", "model": "fraud", "release": "fraud:1"}
    count = prometheus.get_sample_value("headrace_drift_alarms_total", {**labels, "column": "f0"})
    assert count == len(detections)
    p_f0 = prometheus.get_sample_value("headrace_drift_p_value", {**labels, "column": "f0"})
    p_f1 = prometheus.get_sample_value("headrace_drift_p_value", {**labels, "column": "f1"})
    assert p_f0 is not None and p_f0 < 1e-6 and p_f1 is not None and p_f1 > 1e-3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("drift alarm on fraud:1" in r.getMessage() for r in warnings) == 1


def test_a_drift_that_ends_closes_its_episode_and_the_next_one_alarms_again(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    x, _ = synthetic(CLEAN + 3 * DRIFTED, seed=5)
    drifted = np.zeros(len(x), dtype=bool)
    drifted[CLEAN : CLEAN + DRIFTED] = True  # a first episode
    drifted[CLEAN + 2 * DRIFTED :] = True  # back to normal for 1,000 rows, then again
    x[drifted, 0] += 1.0
    values = [
        orjson.dumps({"event_id": f"e{i}", **{f"f{j}": float(x[i, j]) for j in range(N_FEATURES)}})
        for i in range(len(x))
    ]
    worker, name = run(registry, tmp_path / "home", values)
    watch = worker.monitors.drift
    assert watch.cleared >= 1
    rows = [a["row"] for a in watch.alarms]
    assert len(rows) == 2, rows  # one per episode, however many windows each one lasted
    assert CLEAN < rows[0] <= CLEAN + DRIFTED
    assert CLEAN + 2 * DRIFTED < rows[1] <= CLEAN + 3 * DRIFTED
    assert len(broker(name).messages("alarms")) == 2
    assert len(registry.audit_log(action=DRIFT_ALARM_ACTION)) == 2
    assert any("cleared" in r.getMessage() for r in caplog.records)


def test_no_alarm_on_a_stream_without_drift(registry: Registry, tmp_path: Path) -> None:
    values = stream(drift_at=None, rows=CLEAN + DRIFTED, seed=11)
    worker, name = run(registry, tmp_path / "home", values)
    watch = worker.monitors.drift
    assert watch.monitor.rows == CLEAN + DRIFTED
    assert watch.monitor.checks == (CLEAN + DRIFTED - WINDOW) // STRIDE + 1
    assert watch.alarms == [] and broker(name).messages("alarms") == []
    assert registry.audit_log(action=DRIFT_ALARM_ACTION) == []
    assert registry.release_tags("fraud:1") == {}


def test_the_calibration_is_cached_per_release_and_settings(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="headrace.pipeline")
    home = tmp_path / "home"
    values = stream(drift_at=None, rows=300, seed=3)
    started = time.perf_counter()
    first, _ = run(registry, home, values)
    first_s = time.perf_counter() - started
    assert "calibrating the drift threshold of fraud:1" in caplog.text
    assert "simulated windows in" in caplog.text
    cached = list((home / CALIBRATION_DIR).glob("*.json"))
    assert len(cached) == 1
    caplog.clear()
    started = time.perf_counter()
    second, _ = run(registry, home, values)
    second_s = time.perf_counter() - started
    assert "calibrating" not in caplog.text
    assert "read from the calibration cache" in caplog.text
    assert second.monitors.drift.monitor.calibration == first.monitors.drift.monitor.calibration
    print(f"first start {first_s:.2f} s, second {second_s:.2f} s")
    # other settings are another calibration; a corrupt file is simulated again
    caplog.clear()
    run(registry, home, values, drift={"seed": 1})
    assert "calibrating" in caplog.text
    assert len(list((home / CALIBRATION_DIR).glob("*.json"))) == 2
    cached[0].write_bytes(b"{not json")
    caplog.clear()
    third, _ = run(registry, home, values)
    assert "ignoring the cached drift calibration" in caplog.text
    assert third.monitors.drift.monitor.calibration == first.monitors.drift.monitor.calibration


def test_columns_must_be_numeric_fields_with_a_reference(
    registry: Registry, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"\['label', 'nope'\].*\$\.drift\.columns.*'f0'"):
        run(registry, tmp_path, [], drift={"columns": ["f0", "label", "nope"]})


@pytest.mark.parametrize(
    ("drift", "key"),
    [
        ({"window": 1}, "$.drift.window"),
        ({"stride": 0}, "$.drift.stride"),
        ({"window": 100, "stride": 101}, "$.drift.stride"),
        ({"window": 100, "stride": 50, "target_run_length": 100}, "$.drift.target_run_length"),
        ({"calibration_checks": 10}, "$.drift.calibration_checks"),
        ({"clear_after_checks": 0}, "$.drift.clear_after_checks"),
        ({"columns": []}, "$.drift.columns"),
        ({"sink": {"url": "alarms"}}, "$.drift.sink.url"),
        ({"windows": 10}, "unknown field `windows` - at `$.drift`"),
        ({"window": "big"}, "$.drift.window"),
    ],
)
def test_bad_drift_sections_name_the_key(drift: dict[str, Any], key: str) -> None:
    with pytest.raises(PipelineSpecError) as caught:
        pipeline_spec_from_dict(
            {
                "name": "p",
                "model": "m@champion",
                "source": {"url": "memory://b/e"},
                "outputs": [{"url": "memory://b/o"}],
                "drift": drift,
            }
        )
    assert key in str(caught.value)


def test_drift_is_off_unless_asked_for() -> None:
    spec = pipeline_spec_from_dict(
        {
            "name": "p",
            "model": "m@champion",
            "source": {"url": "memory://b/e"},
            "outputs": [{"url": "memory://b/o"}],
        }
    )
    assert spec.drift is None
    on = pipeline_spec_from_dict(
        {
            "name": "p",
            "model": "m@champion",
            "source": {"url": "memory://b/e"},
            "outputs": [{"url": "memory://b/o"}],
            "drift": {},
        }
    )
    assert on.drift is not None and on.drift.enabled and on.drift.window == 1000
    assert np.isclose(on.drift.target_run_length, 100_000)
