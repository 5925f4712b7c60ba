"""The demo tells the truth: a threshold chosen on validation rows, the worker's own
capacity apart from the producer's pace, and each statistic under its own name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.cli.demo import _throughput_lines
from headrace.demo.story import alarm_evidence, format_p
from headrace.demo.training import best_f1_threshold, train_first
from headrace.release.config import load_config


def test_the_threshold_comes_from_the_validation_rows_and_lands_in_the_config(
    tmp_path: Path,
) -> None:
    trained = train_first(tmp_path, rows=6000, seed=42)
    out, threshold, validation = trained.directory, trained.threshold, trained.validation
    assert trained.auc > 0.6
    # at 0.5 the rare fraud class is almost never predicted; the chosen threshold finds it
    assert validation["recall_at_0.5"] < 0.1 < validation["recall"]
    assert 0.0 < threshold < 0.5
    assert load_config(out / "config.yaml").threshold == pytest.approx(threshold, abs=1e-6)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=10, max_value=400),
)
def test_best_f1_threshold_is_the_best_f1(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    y[:2] = [0, 1]  # both classes present
    scores = np.clip(y * 0.3 + rng.uniform(0, 0.7, size=n), 0, 1)
    threshold, found = best_f1_threshold(y, scores)

    def f1(t: float) -> float:
        predicted = scores >= t
        tp = float(np.sum(predicted & (y == 1)))
        fp, fn = float(np.sum(predicted & (y == 0))), float(np.sum(~predicted & (y == 1)))
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)

    assert f1(threshold) == pytest.approx(found["f1"])
    assert all(f1(float(t)) <= found["f1"] + 1e-12 for t in np.unique(scores))


def _stats(*, events: int, seconds: float, busy_s: float) -> dict[str, object]:
    return {
        "events": events,
        "seconds": seconds,
        "busy_s": busy_s,
        "events_per_s": events / seconds,
        "processing_ms": {"p50": 2.0, "p95": 3.0, "p99": 4.0},
        "end_to_end_ms": {"p50": 384.0, "p99": 900.0},
    }


def test_capacity_is_events_over_busy_time_not_the_producers_pace() -> None:
    # 50,000 events over 5 s at the producer's pace, the worker busy for 2 s of it
    lines = "\n".join(
        _throughput_lines(_stats(events=50_000, seconds=5.0, busy_s=2.0), rate=10_000)
    )
    assert "25,000 events/s" in lines and "busy 40% of the run" in lines
    assert "10,000/s asked" in lines and "offered more than" not in lines
    slow = "\n".join(_throughput_lines(_stats(events=50_000, seconds=5.0, busy_s=4.0), rate=20_000))
    assert "capacity      12,500 events/s" in slow
    assert "offered more than the worker can score (20,000/s > 12,500/s)" in slow


def test_the_alarm_names_its_statistic_apart_from_the_reports_ks_d() -> None:
    record = {
        "statistic": 3.907,
        "threshold": 2.169,
        "columns": ["amount"],
        "p_values": {"amount": 7.3e-14, "hour": 0.5},
    }
    text = alarm_evidence(record)
    assert text == "scaled KS sqrt(nm/(n+m))*D = 3.91 > 2.17; KS amount p = 7.3e-14"
    assert "KS statistic" not in text and "KS D" not in text
    assert format_p(0.0) == "< 1e-300" and format_p(0.0123456) == "0.0123"


def test_outputs_are_counted_per_release_and_the_last_run_named(tmp_path: Path) -> None:
    from headrace.demo.story import DemoResult, _check_outputs

    releases = ["fraud:1"] * 5 + ["fraud:2"] * 2 + ["fraud:1"] + ["fraud:2"] * 3
    path = tmp_path / "out.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps({"release": r, "prediction": "fraud" if i % 4 == 0 else "legit"}) + b"\n"
            for i, r in enumerate(releases)
        )
    )
    result = DemoResult(home=tmp_path, outputs_path=path)
    _check_outputs(result)
    assert result.outputs_by_release == {"fraud:1": 6, "fraud:2": 5}
    # a canary interleaves both releases; only the run after the last fraud:1 counts
    assert result.last_outputs == ("fraud:2", 3)
    assert result.flagged == 3 and len(result.examples) == 3
