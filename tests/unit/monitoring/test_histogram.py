"""`BatchHistogram` renders what prometheus-client's own `Histogram` would, for the
same values, observed a batch at a time."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headrace.monitoring.histogram import BatchHistogram
from headrace.monitoring.metrics import LATENCY_BUCKETS


def samples(
    registry: CollectorRegistry, name: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every ``_bucket``/``_count``/``_sum`` sample of `name`, as the text exposition has them."""
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_count", "_sum")):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_batches_render_exactly_as_prometheus_client_renders_single_observations(
    rng: np.random.Generator,
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram(
        "lat_seconds", "Latency.", ["stage"], buckets=LATENCY_BUCKETS, registry=ours
    )
    single = Histogram(
        "lat_seconds", "Latency.", ["stage"], buckets=LATENCY_BUCKETS, registry=theirs
    )
    # Values on the bounds themselves (``le`` means <=), zero, beyond the last bound.
    values = np.concatenate(
        [np.asarray(LATENCY_BUCKETS), [0.0, 20.0, 1e9], rng.exponential(0.05, size=2000)]
    )
    for chunk in np.array_split(values, 7):
        batch.labels("decode").observe_many(chunk)
    for value in values:
        single.labels("decode").observe(float(value))
    batch.labels("send").observe(0.25)
    single.labels("send").observe(0.25)

    got, expected = samples(ours, "lat_seconds"), samples(theirs, "lat_seconds")
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_negative_values_count_as_zero_and_nan_values_not_at_all() -> None:
    registry = CollectorRegistry()
    histogram = BatchHistogram("skew_seconds", "Skew.", [], buckets=[0.1, 1.0], registry=registry)
    histogram.labels().observe_many(np.array([-5.0, np.nan, 0.5]))
    histogram.labels().observe(float("nan"))
    histogram.labels().observe(-1.0)
    got = samples(registry, "skew_seconds")
    assert got[("skew_seconds_count", ())] == 3
    assert got[("skew_seconds_sum", ())] == 0.5  # the sum never goes down: rate() holds
    assert got[("skew_seconds_bucket", (("le", "0.1"),))] == 2
    assert got[("skew_seconds_bucket", (("le", "+Inf"),))] == 3


def test_an_empty_batch_changes_nothing_and_remove_drops_the_series() -> None:
    registry = CollectorRegistry()
    histogram = BatchHistogram("x_seconds", "X.", ["k"], buckets=[1.0], registry=registry)
    histogram.labels("a").observe_many(np.array([], dtype=np.float64))
    assert samples(registry, "x_seconds")[("x_seconds_count", (("k", "a"),))] == 0
    histogram.remove("a")
    assert samples(registry, "x_seconds") == {}


@pytest.mark.parametrize(
    ("buckets", "problem"),
    [([], "strictly increasing"), ([1.0, 0.5], "strictly increasing"), ([1.0, 1.0], "strictly")],
)
def test_bad_buckets_are_refused_with_the_histogram_name(
    buckets: list[float], problem: str
) -> None:
    with pytest.raises(ValueError, match=rf"'bad_seconds'.*{problem}"):
        BatchHistogram("bad_seconds", "Bad.", [], buckets=buckets, registry=None)


def test_wrong_label_count_names_the_labels() -> None:
    histogram = BatchHistogram(
        "y_seconds", "Y.", ["pipeline", "stage"], buckets=[1.0], registry=None
    )
    with pytest.raises(ValueError, match=r"'y_seconds' takes labels \['pipeline', 'stage'\]"):
        histogram.labels("only-one")


def test_a_duplicate_name_is_refused_by_the_registry() -> None:
    registry = CollectorRegistry()
    BatchHistogram("dup_seconds", "D.", [], buckets=[1.0], registry=registry)
    with pytest.raises(ValueError, match="dup_seconds"):
        BatchHistogram("dup_seconds", "D.", [], buckets=[1.0], registry=registry)


def test_concurrent_batches_and_scrapes_lose_nothing() -> None:
    registry = CollectorRegistry()
    histogram = BatchHistogram("c_seconds", "C.", [], buckets=[0.5, 1.0], registry=registry)
    child = histogram.labels()
    batch = np.array([0.1, 0.7, 3.0])
    stop = threading.Event()
    torn: list[list[float]] = []

    def scrape() -> None:
        while not stop.is_set():
            got = samples(registry, "c_seconds")
            buckets = [got[("c_seconds_bucket", (("le", le),))] for le in ("0.5", "1.0", "+Inf")]
            if buckets != sorted(buckets) or buckets[-1] != got[("c_seconds_count", ())]:
                torn.append(buckets)

    def observe() -> None:
        for _ in range(2000):
            child.observe_many(batch)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=observe) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    scraper.join()
    assert not torn
    got = samples(registry, "c_seconds")
    assert got[("c_seconds_count", ())] == 4 * 2000 * 3
    assert got[("c_seconds_bucket", (("le", "0.5"),))] == 4 * 2000
    assert got[("c_seconds_sum", ())] == pytest.approx(4 * 2000 * 3.8)
