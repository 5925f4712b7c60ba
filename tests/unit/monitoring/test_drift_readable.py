"""The drift report a person reads: booleans tested and drawn as categories, skewed
columns on a log axis, round ticks, one p-value format, no rows of evidence at p = 1."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from headrace.monitoring.drift import DriftReference, check_drift
from headrace.monitoring.drift.check import boolean_columns, boolean_counts
from headrace.monitoring.drift.report import _log_ticks, _nice_ticks, format_p, render_html


def _frame(rng: np.random.Generator, rows: int, *, amount_x: float = 1.0, present: float = 0.7):
    return {
        "amount": rng.lognormal(3.0, 1.2, rows) * amount_x,
        "card_present": rng.random(rows) < present,
        "hour": rng.integers(0, 24, rows),
        "score_in": rng.normal(size=rows),
        "noise_a": rng.normal(size=rows),
        "noise_b": rng.normal(size=rows),
    }


def test_booleans_get_chi_square_on_their_counts() -> None:
    rng = np.random.default_rng(11)
    reference = DriftReference.from_columns(_frame(rng, 5_000))
    assert boolean_columns(reference) == ["card_present"]
    current = _frame(rng, 1_000, present=0.6)
    current["card_present"] = current["card_present"].astype(np.int8)  # as a stream sends it
    report = check_drift(reference, current, correction="none")
    flag = {c.column: c for c in report.columns}["card_present"]
    assert (flag.kind, flag.test) == ("boolean", "chi2")
    ref_counts, cur_counts = boolean_counts(reference, "card_present", current["card_present"])
    expected = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
    assert flag.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert flag.p_value == pytest.approx(expected.pvalue, rel=1e-6)
    assert {c.column: c.test for c in report.columns}["hour"] == "ks"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, float("nan")]), min_size=1, max_size=60))
def test_boolean_counts_count_every_present_value(values: list[float]) -> None:
    reference = DriftReference.from_columns({"f": np.array([0.0, 1.0, 1.0])})
    ref_counts, cur_counts = boolean_counts(reference, "f", np.array(values))
    assert ref_counts.tolist() == [1, 2]
    assert cur_counts.tolist() == [values.count(0.0), values.count(1.0)]


def test_the_report_draws_skew_on_a_log_axis_and_hides_no_evidence() -> None:
    rng = np.random.default_rng(12)
    reference = DriftReference.from_columns(_frame(rng, 5_000))
    current = _frame(rng, 2_000, amount_x=1.5, present=0.6)
    report = check_drift(reference, current)
    page = render_html(report, reference, current)
    assert "amount: reference vs current distribution (log axis)" in page
    assert "score_in: reference vs current distribution (linear axis)" in page
    assert "card_present: category shares" in page and "chi² =" in page
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', page)
    assert ticks and all(re.fullmatch(r"-?[\d,]+(\.\d{1,2})?|\d?e-?\d+", t) for t in ticks), ticks
    # one p-value format: "p = " and 3 significant digits, never "p=" nor fixed decimals
    assert "p=" not in page and "p = 0.000" not in page and "p = 1.000" not in page
    nothing = [c for c in report.columns if c.adjusted_p_value >= 0.9995 and not c.drifted]
    assert nothing, "the fixture needs columns without evidence"
    assert f"{len(nothing)} more column" in page
    chart = page.split("Evidence per column")[1].split("Distributions")[0]
    for c in nothing:
        assert f">{c.column}</text>" not in chart


def test_ticks_and_p_values() -> None:
    assert _nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert _nice_ticks(3.7, 97.2) == [20.0, 40.0, 60.0, 80.0]
    assert _log_ticks(3.0, 900.0) == [5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
    assert _log_ticks(0.5, 2e6) == [1.0, 10.0, 100.0, 1000.0, 1e4, 1e5, 1e6]
    assert [format_p(p) for p in (1.0, 0.05, 0.0123456, 7.3e-14, 0.0, float("nan"))] == [
        "1", "0.05", "0.0123", "7.3e-14", "< 1e-300", "n/a",
    ]  # fmt: skip
