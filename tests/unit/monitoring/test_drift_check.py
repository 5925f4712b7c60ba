"""check_drift and its parts: chi-square, PSI, JS, corrections, MMD, references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from headrace.errors import DriftError
from headrace.monitoring.drift import (
    DriftReference,
    adjust_pvalues,
    check_drift,
    chi_square,
    jensen_shannon,
    ks_statistics,
    mmd_test,
    population_stability_index,
    window_bin_counts,
)


def _columns(rng: np.random.Generator, rows: int, *, shift: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "amount": rng.lognormal(3.0 + shift, 1.0, rows),
        "hour": rng.integers(0, 24, rows),
        "score_in": rng.normal(size=rows),
        "merchant": rng.choice(["grocery", "fuel", "travel"], rows, p=[0.5, 0.3, 0.2]).astype(
            object
        ),
    }


def test_chi_square_equals_scipy_contingency(rng: np.random.Generator) -> None:
    ref = rng.integers(0, 200, size=6)
    cur = rng.integers(0, 50, size=6)
    ref[2] = cur[2] = 0  # a category empty on both sides does not count
    statistic, p, dof = chi_square(ref, cur)
    table = np.vstack([ref, cur])[:, [0, 1, 3, 4, 5]]
    expected = stats.chi2_contingency(table, correction=False)
    assert statistic[0] == pytest.approx(expected.statistic, rel=1e-12)
    assert p[0] == pytest.approx(expected.pvalue, rel=1e-10)
    assert dof[0] == expected.dof == 4


def test_chi_square_degenerate_inputs() -> None:
    statistic, p, dof = chi_square([10, 0], [5, 0])  # one category only: nothing to test
    assert (statistic[0], p[0], dof[0]) == (0.0, 1.0, 0)
    _, p_empty, _ = chi_square([10, 5], [0, 0])
    assert p_empty[0] == 1.0
    with pytest.raises(ValueError, match="count shapes differ"):
        chi_square([1, 2], [1, 2, 3])


def test_jensen_shannon_equals_scipy(rng: np.random.Generator) -> None:
    p, q = rng.integers(0, 100, size=12), rng.integers(0, 100, size=12)
    q[3] = 0
    assert jensen_shannon(p, q)[0] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-12)
    assert jensen_shannon(p, p)[0] == pytest.approx(0.0, abs=1e-7)
    assert jensen_shannon([1, 0], [0, 1])[0] == pytest.approx(1.0)


def test_psi_by_hand() -> None:
    ref, cur = np.array([50, 30, 20]), np.array([30, 30, 40])
    r, c = ref / 100, cur / 100
    assert population_stability_index(ref, cur)[0] == pytest.approx(
        float(np.sum((c - r) * np.log(c / r)))
    )
    assert population_stability_index(ref, ref)[0] == 0.0
    assert np.isfinite(population_stability_index([10, 0], [0, 10])[0])  # empty bins


def test_corrections() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adjust_pvalues(p)[:4], [0.04, 0.16, 0.12, 0.02])
    # Benjamini-Hochberg by hand: sorted 0.005, 0.01, 0.03, 0.04 -> x4/1, x4/2, x4/3, x4/4
    np.testing.assert_allclose(adjust_pvalues(p, correction="bh")[:4], [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_array_equal(adjust_pvalues(p, correction="none")[:4], p[:4])
    assert np.isnan(adjust_pvalues(p)[4])
    with pytest.raises(ValueError, match="Unknown correction 'holm'"):
        adjust_pvalues(p, correction="holm")  # type: ignore[arg-type]


def test_no_drift_passes_and_shifts_are_named(rng: np.random.Generator) -> None:
    """At alpha 1e-4 a false flag is a 1-in-10,000 event; the shifts give p < 1e-10."""
    reference = DriftReference.from_columns(_columns(rng, 10_000))
    same = check_drift(reference, _columns(rng, 1_000), alpha=1e-4)
    assert same.drifted_columns == () and not same.drifted
    moved = _columns(rng, 1_000, shift=0.3)
    moved["merchant"] = rng.choice(["grocery", "fuel", "travel"], 1_000, p=[0.2, 0.3, 0.5])
    report = check_drift(reference, moved, alpha=1e-4)
    assert set(report.drifted_columns) == {"amount", "merchant"}
    by_name = {c.column: c for c in report.columns}
    assert by_name["merchant"].test == "chi2" and by_name["amount"].test == "ks"
    assert by_name["amount"].psi > by_name["score_in"].psi
    data = report.to_dict()
    assert data["drifted"] is True and {c["column"] for c in data["columns"]} == set(moved)


def test_check_matches_scipy_per_column(rng: np.random.Generator) -> None:
    ref_cols = _columns(rng, 3_000)
    cur_cols = _columns(rng, 400, shift=0.1)
    report = check_drift(
        DriftReference.from_columns(ref_cols), cur_cols, method="asymp", correction="none"
    )
    for c in report.columns:
        if c.kind == "numeric":
            expected = stats.ks_2samp(ref_cols[c.column], cur_cols[c.column], method="asymp")
            assert c.statistic == pytest.approx(expected.statistic, rel=1e-12)
            assert c.p_value == pytest.approx(expected.pvalue, rel=1e-9)
            assert c.adjusted_p_value == c.p_value


def test_unseen_categories_count_as_drift(rng: np.random.Generator) -> None:
    reference = DriftReference.from_columns({"kind": np.array(["a", "b"] * 500, dtype=object)})
    current = {"kind": np.array(["a", "b", "z", None] * 50, dtype=object)}
    report = check_drift(reference, current)
    assert report.drifted_columns == ("kind",)
    assert report.columns[0].current_rows == 150  # None is missing, not a category
    _, counts, names = reference.count_categories("kind", current["kind"])
    assert names[-1] == "(unseen)" and counts[-1] == 50


def test_prediction_drift_and_mmd() -> None:
    """A fixed draw: "no column flagged" fails for ~5% of seeds by design of alpha."""
    rng = np.random.default_rng(20261122)
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    ref = rng.multivariate_normal([0, 0], cov, size=4_000)
    reference = DriftReference.from_columns(
        {"a": ref[:, 0], "b": ref[:, 1]}, scores=rng.beta(2, 5, size=4_000)
    )
    flipped = rng.multivariate_normal([0, 0], [[1.0, -0.8], [-0.8, 1.0]], size=800)
    report = check_drift(
        reference,
        {"a": flipped[:, 0], "b": flipped[:, 1]},
        scores=rng.beta(5, 2, size=800),
        multivariate=True,
    )
    # Each margin is still N(0, 1): only the joint test sees the correlation flip.
    assert report.drifted_columns == ()
    assert report.multivariate is not None and report.multivariate.p_value < 0.01
    assert report.prediction is not None and report.prediction.drifted
    assert report.prediction.js_distance > 0.3 and report.drifted
    null = mmd_test(ref, rng.multivariate_normal([0, 0], cov, size=800), seed=3)
    assert null.p_value > 0.05 and null.permutations == 200


def test_malformed_inputs_name_the_column_and_the_fix(rng: np.random.Generator) -> None:
    reference = DriftReference.from_columns(_columns(rng, 500))
    with pytest.raises(DriftError, match=r"No common columns: the window has \['x'\]"):
        check_drift(reference, {"x": np.zeros(5)})
    with pytest.raises(DriftError, match="Column 'amount' is numeric in the reference"):
        check_drift(reference, {"amount": np.array(["1.5", "2"], dtype=object)})
    with pytest.raises(DriftError, match="Column 'merchant' is categorical"):
        check_drift(reference, {"merchant": np.array([1.0, 2.0])})
    with pytest.raises(DriftError, match="differ in length"):
        check_drift(reference, {"amount": np.zeros(3), "hour": np.zeros(4)})
    with pytest.raises(DriftError, match="alpha must be between 0 and 1, got 5"):
        check_drift(reference, {"amount": np.zeros(3)}, alpha=5)
    with pytest.raises(DriftError, match="Reference column 'm' has shape"):
        DriftReference.from_columns({"m": np.zeros((3, 2))})


def test_reference_from_a_release(tmp_path: Path, rng: np.random.Generator) -> None:
    from headrace.registry import Registry
    from support.models import draft_from, synthetic, write_sklearn_release

    files = write_sklearn_release(tmp_path / "model", rows=3_000)
    with Registry(
        f"sqlite:///{tmp_path / 'registry.db'}",
        artifacts=f"file://{tmp_path / 'artifacts'}",
        actor="test",
        cache_dir=tmp_path / "cache",
    ) as registry:
        release = registry.register(draft_from(files, tmp_path))
        reference = DriftReference.from_release(registry, release)
    assert reference.source == "release fraud:1"
    assert reference.sorted.sizes.tolist() == [1_000] * 6  # the release's sample
    assert reference.sample is not None and reference.sample.shape == (1_000, 6)
    x, _ = synthetic(1_000, seed=99)
    same = {f"f{i}": x[:, i] for i in range(5)}
    assert check_drift(reference, same).drifted_columns == ()
    x_shift, _ = synthetic(1_000, seed=98, shift=0.5)
    moved = {f"f{i}": x_shift[:, i] for i in range(5)}
    assert set(check_drift(reference, moved).drifted_columns) == {f"f{i}" for i in range(5)}


def test_window_bins_equal_a_search_per_value(rng: np.random.Generator) -> None:
    ref = rng.normal(size=(3_000, 3))
    ref[:, 2] = np.round(ref[:, 2])  # ties: several deciles share a value
    window = rng.normal(0.3, 1.0, size=(500, 3))
    window[::5, 1] = np.nan
    window[:, 2] = np.round(window[:, 2])
    reference = DriftReference.build(numeric={f"c{j}": ref[:, j] for j in range(3)})
    _, counts, positions = ks_statistics(reference.sorted, window)
    binned = window_bin_counts(positions, counts, reference.bin_starts)
    for j in range(3):
        values = window[:, j][~np.isnan(window[:, j])]
        below = np.searchsorted(reference.sorted.views[j], values, side="left")
        bins = np.searchsorted(reference.bin_starts[j], below, side="right") - 1
        np.testing.assert_array_equal(binned[j], np.bincount(bins, minlength=10))
    assert binned.sum(axis=1).tolist() == [500, 400, 500]
    assert reference.bin_counts[0].tolist() == [300] * 10  # deciles of distinct values


def test_references_refuse_what_they_cannot_use(tmp_path: Path) -> None:
    from headrace.registry import Registry
    from headrace.release.bundle import build_draft
    from support.models import write_sklearn_release

    with pytest.raises(DriftError, match=r"Reference sample has shape \(4,\), expected"):
        DriftReference.build(numeric={"a": np.zeros(4), "b": np.zeros(4)}, sample=np.zeros(4))
    files = write_sklearn_release(tmp_path / "model")
    (tmp_path / "scratch").mkdir()
    draft = build_draft(
        files.model,
        name="nodata",
        flavor="sklearn",
        workdir=tmp_path / "scratch",
        schema_path=files.schema,
    )
    with Registry(
        f"sqlite:///{tmp_path / 'registry.db'}",
        artifacts=f"file://{tmp_path / 'artifacts'}",
        actor="test",
        cache_dir=tmp_path / "cache",
    ) as registry:
        release = registry.register(draft)
        with pytest.raises(DriftError, match="Release nodata:1 has no reference profile"):
            DriftReference.from_release(registry, release)
