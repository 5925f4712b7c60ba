"""Live accuracy: metrics equal scikit-learn's, the join is bounded, what is lost is counted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score

from headrace.monitoring.accuracy import AccuracyMonitor, calibration_error, roc_auc


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def labelled(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Truth and scores that agree more often than not, with ties (two decimals)."""
    truth = rng.random(n) < 0.3
    scores = np.clip(np.round(rng.normal(0.35 + 0.3 * truth, 0.2), 2), 0.0, 1.0)
    return truth, scores


def sklearn_ece(truth: np.ndarray, scores: np.ndarray, n_bins: int) -> float:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], scores), minlength=n_bins)
    rate, mean = calibration_curve(truth, scores, n_bins=n_bins, strategy="uniform")
    return float(np.sum(counts[counts > 0] / len(scores) * np.abs(rate - mean)))


def test_auc_and_calibration_equal_sklearn(rng: np.random.Generator) -> None:
    for n in (2, 17, 1000, 5000):
        truth, scores = labelled(rng, n)
        truth[0], truth[1] = True, False  # both classes
        assert roc_auc(truth, scores) == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
        ece, bins = calibration_error(truth, scores, n_bins=10)
        rate, mean = calibration_curve(truth, scores, n_bins=10, strategy="uniform")
        assert [b.positive_rate for b in bins] == pytest.approx(rate.tolist())
        assert [b.mean_score for b in bins] == pytest.approx(mean.tolist())
        assert sum(b.count for b in bins) == n
        assert ece == pytest.approx(sklearn_ece(truth, scores, 10))


def test_auc_is_undefined_for_one_class_and_skips_nan_scores() -> None:
    assert roc_auc(np.array([True, True]), np.array([0.1, 0.9])) is None
    truth = np.array([True, False, True, False])
    scores = np.array([0.9, 0.2, np.nan, 0.4])
    assert roc_auc(truth, scores) == 1.0
    assert calibration_error(np.array([True]), np.array([np.nan])) == (None, ())


def test_monitor_reports_sklearn_metrics_per_release(rng: np.random.Generator) -> None:
    monitor = AccuracyMonitor("fraud", classes=["legit", "fraud"], window=100_000)
    expected: dict[str, tuple[list[bool], list[bool], list[float]]] = {}
    labels: list[tuple[str, object]] = []
    for release in ("fraud:1", "fraud:2"):
        truth, scores = labelled(rng, 3000)
        predicted = scores >= 0.5
        ids = [f"{release}-{i}" for i in range(len(truth))]
        for start in range(0, len(ids), 512):  # batches, as a worker adds them
            part = slice(start, start + 512)
            monitor.add_predictions(
                ids[part],
                ["fraud" if p else "legit" for p in predicted[part]],
                scores[part].tolist(),
                release=release,
            )
        # labels in every accepted form: the class name, 0/1, booleans, "true"/"false"
        forms = [("fraud", "legit"), (1, 0), (True, False), ("true", "false"), (1.0, 0.0)]
        for i, (event_id, t) in enumerate(zip(ids, truth, strict=True)):
            positive, negative = forms[i % len(forms)]
            labels.append((event_id, positive if t else negative))
        expected[release] = (truth.tolist(), predicted.tolist(), scores.tolist())
    order = rng.permutation(len(labels))
    shuffled = [labels[i] for i in order]
    joined = 0
    for start in range(0, len(shuffled), 700):
        chunk = shuffled[start : start + 700]
        joined += monitor.add_labels([c[0] for c in chunk], [c[1] for c in chunk])
    assert joined == 6000
    reports = monitor.report()
    assert sorted(reports) == ["fraud:1", "fraud:2"]
    for release, (truth_list, predicted_list, scores_list) in expected.items():
        truth, predicted = np.array(truth_list), np.array(predicted_list)
        scores = np.array(scores_list)
        report = reports[release]
        assert report.joined == 3000
        assert report.positives == int(truth.sum())
        assert report.accuracy == pytest.approx(accuracy_score(truth, predicted))
        assert report.precision == pytest.approx(precision_score(truth, predicted))
        assert report.recall == pytest.approx(recall_score(truth, predicted))
        assert report.auc == pytest.approx(roc_auc_score(truth, scores))
        assert report.ece == pytest.approx(sklearn_ece(truth, scores, 10))
    stats = monitor.stats()
    assert (stats.joined, stats.pending, stats.late, stats.unknown, stats.invalid) == (
        6000,
        0,
        0,
        0,
        0,
    )


def test_window_keeps_the_last_rows_only() -> None:
    monitor = AccuracyMonitor(1, classes=[0, 1], window=10)
    ids = [f"e{i}" for i in range(30)]
    # the first 20 predictions are wrong, the last 10 right
    monitor.add_predictions(ids, [1] * 30, [0.9] * 30, release="m:1")
    monitor.add_labels(ids, [0] * 20 + [1] * 10)
    report = monitor.report()["m:1"]
    assert (report.joined, report.accuracy, report.precision, report.recall) == (10, 1.0, 1.0, 1.0)
    assert report.auc is None  # one class in the window


def test_bounded_memory_under_a_flood() -> None:
    clock = Clock()
    monitor = AccuracyMonitor("fraud", classes=["legit", "fraud"], max_pending=1000, clock=clock)
    total = 200_000
    for start in range(0, total, 512):
        ids = [f"e{i}" for i in range(start, min(total, start + 512))]
        monitor.add_predictions(ids, ["legit"] * len(ids), [0.1] * len(ids), release="f:1")
        clock.now += 0.001
    stats = monitor.stats()
    assert stats.pending == 1000
    assert stats.evicted == total - 1000
    assert len(monitor._index) <= 1000  # indexed only when labels come
    assert len(monitor._gone) <= 1000  # remembered evictions are bounded too
    assert len(monitor._gone_before) < 2000  # a generation: < max_pending + one drop
    assert monitor._ids.shape == (1000,)
    # a label for an evicted prediction is late, one for the newest joins
    assert monitor.add_labels([f"e{total - 1500}", f"e{total - 1}"], ["fraud", "legit"]) == 1
    assert len(monitor._index) == 999  # the kept ones, indexed, less the one joined
    # one evicted so long ago it is no longer remembered: unknown, still counted
    monitor.add_labels(["e0"], ["legit"])
    stats = monitor.stats()
    assert (stats.joined, stats.late, stats.unknown) == (1, 1, 1)
    # a single batch larger than the whole bound
    monitor.add_predictions([f"x{i}" for i in range(2500)], [0] * 2500, None, release="f:1")
    assert monitor.stats().pending == 1000


def test_labels_past_the_time_limit_are_counted_late() -> None:
    clock = Clock()
    monitor = AccuracyMonitor("fraud", classes=["legit", "fraud"], ttl_s=60.0, clock=clock)
    monitor.add_predictions(["a", "b", "c"], ["fraud", "legit", "fraud"], None, release="f:1")
    clock.now += 30
    monitor.add_predictions(["d"], ["legit"], None, release="f:1")
    assert monitor.add_labels(["a"], ["fraud"]) == 1
    clock.now += 31  # b and c are 61 s old now, d 31 s
    assert monitor.add_labels(["b", "c", "d", "zzz"], ["legit", "fraud", "legit", "fraud"]) == 1
    stats = monitor.stats()
    assert (stats.joined, stats.expired, stats.late, stats.unknown, stats.pending) == (
        2,
        2,
        2,
        1,
        0,
    )
    report = monitor.report()["f:1"]
    assert report.joined == 2
    assert report.auc is None and report.ece is None and report.bins == ()  # no scores


def test_a_repeated_event_joins_once_and_expires_once() -> None:
    clock = Clock()
    monitor = AccuracyMonitor("y", classes=["n", "y"], ttl_s=10.0, clock=clock)
    monitor.add_predictions(["a"], ["y"], [0.8], release="r:1")
    monitor.add_predictions(["a"], ["y"], [0.8], release="r:1")  # redelivered after a crash
    assert monitor.add_labels(["a", "a"], ["y", "y"]) == 1
    clock.now += 11
    stats = monitor.stats()
    assert (stats.joined, stats.expired, stats.unknown) == (1, 0, 1)


def test_invalid_labels_are_counted_not_joined() -> None:
    monitor = AccuracyMonitor("fraud", classes=["legit", "fraud"])
    monitor.add_predictions(["a", "b", "c", "d"], ["fraud"] * 4, [0.9] * 4, release="f:1")
    assert monitor.add_labels(["a", "b", "c", "d"], ["maybe", None, 2, [1]]) == 0
    assert monitor.stats().invalid == 4
    assert monitor.stats().pending == 4


def test_multiclass_reports_accuracy_without_auc() -> None:
    monitor = AccuracyMonitor("b", classes=["a", "b", "c"])
    monitor.add_predictions(["1", "2", "3"], ["a", "b", "c"], [0.5, 0.6, 0.7], release="m:1")
    monitor.add_labels(["1", "2", "3"], ["a", "b", "a"])
    report = monitor.report()["m:1"]
    assert report.accuracy == pytest.approx(2 / 3)
    assert (report.precision, report.recall) == (1.0, 1.0)
    assert report.auc is None and report.ece is None


def test_malformed_arguments_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="positive class 'yes' is not one of the classes"):
        AccuracyMonitor("yes", classes=["legit", "fraud"])
    with pytest.raises(ValueError, match="max_pending must be at least 1, got 0"):
        AccuracyMonitor(1, max_pending=0)
    with pytest.raises(ValueError, match="ttl_s must be positive"):
        AccuracyMonitor(1, ttl_s=0)
    monitor = AccuracyMonitor(1, classes=[0, 1])
    with pytest.raises(ValueError, match="2 event ids but 1 predictions"):
        monitor.add_predictions(["a", "b"], [1], None, release="r")
    with pytest.raises(ValueError, match="2 event ids but 1 labels"):
        monitor.add_labels(["a", "b"], [1])


def test_the_lazy_index_counts_like_a_plain_ring(rng: np.random.Generator) -> None:
    """Batches and labels interleaved at random over a small wrapping ring: every count
    equals that of a plain list of slots (the index is built only when labels come, so
    evictions and expiries hit indexed and unindexed slots alike)."""
    clock = Clock()
    cap, ttl = 300, 50.0
    monitor = AccuracyMonitor(1, classes=[0, 1], max_pending=cap, ttl_s=ttl, clock=clock)
    slots: list[list[Any]] = []  # [id, time kept, unjoined], oldest first
    gone: list[str] = []
    want = {"joined": 0, "expired": 0, "evicted": 0, "late": 0, "unknown": 0}

    def drop(n: int, counter: str) -> None:
        for event_id, _at, unjoined in slots[:n]:
            if unjoined:
                gone.append(str(event_id))
                want[counter] += 1
        del slots[:n]

    next_id = 0
    for _ in range(400):
        clock.now += float(rng.integers(0, 8))
        drop(sum(1 for slot in slots if slot[1] < clock.now - ttl), "expired")
        if rng.random() < 0.6:
            k = int(rng.integers(1, 120))
            ids = [f"e{i}" for i in range(next_id, next_id + k)]
            next_id += k
            monitor.add_predictions(ids, [1] * k, [0.7] * k, release="r:1")
            drop(max(0, len(slots) + k - cap), "evicted")
            slots.extend([event_id, clock.now, True] for event_id in ids)
        else:
            # labels for kept, recently gone and never seen events
            live = [str(slot[0]) for slot in slots if slot[2]]
            asked = list(rng.choice(live, size=min(len(live), 20), replace=False)) if live else []
            asked += gone[-5:] + [f"x{next_id}"]
            for event_id in asked:
                slot = next((slot for slot in slots if slot[0] == event_id and slot[2]), None)
                if slot is not None:
                    slot[2] = False
                    want["joined"] += 1
                elif event_id in gone:
                    want["late"] += 1
                else:
                    want["unknown"] += 1
            monitor.add_labels(asked, [1] * len(asked))
            stats = monitor.stats()
            assert {name: getattr(stats, name) for name in want} == want
            assert stats.pending == sum(1 for slot in slots if slot[2])
    assert want["joined"] and want["expired"] and want["evicted"] and want["late"]
