"""`WorkerMetrics`, `DriftMetrics`, `source_lag` and `serve_metrics`, read back from the
text exposition as Prometheus would read them."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from headrace.errors import ConfigError
from headrace.monitoring.metrics import (
    BATCH_BUCKETS,
    LATENCY_BUCKETS,
    DriftMetrics,
    WorkerMetrics,
    exposition,
    new_registry,
    serve_metrics,
    source_lag,
)

MARKS = (10.0, 10.001, 10.0015, 10.0115, 10.0125)
"""start, decoded (+1 ms), deduplicated (+0.5 ms), scored (+10 ms), sent (+1 ms)."""


def read(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition: (sample name, labels) -> value."""
    text = exposition(registry)[0].decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


RELEASE = labels(pipeline="scoring", model="fraud", release="fraud:3")


def batch(metrics: WorkerMetrics, release: str = "fraud:3", **override: Any) -> None:
    arguments: dict[str, Any] = {
        "events": 10,
        "outputs": 7,
        "deduplicated": 1,
        "dead_letter_stages": ["validate", "decode", "validate"],
        "end_to_end_ms": np.array([5.0, 20.0, 600.0, 40.0, 1.0, 2.0, 3.0]),
        "marks": MARKS,
    }
    arguments.update(override)
    metrics.observe_batch(release, **arguments)


def test_a_batch_moves_every_counter_and_histogram_once() -> None:
    registry = new_registry()
    metrics = WorkerMetrics(registry, pipeline="scoring")
    batch(metrics)
    got = read(registry)
    assert got[("headrace_pipeline_events_in_total", RELEASE)] == 10
    assert got[("headrace_pipeline_events_out_total", RELEASE)] == 7
    assert got[("headrace_pipeline_deduplicated_total", RELEASE)] == 1
    assert got[("headrace_pipeline_dead_letters_total", RELEASE | {("stage", "validate")})] == 2
    assert got[("headrace_pipeline_dead_letters_total", RELEASE | {("stage", "decode")})] == 1
    assert got[("headrace_pipeline_batch_events_count", RELEASE)] == 1
    assert got[("headrace_pipeline_batch_events_sum", RELEASE)] == 10
    # Per-event latencies in seconds: 6 of 7 within 0.5 s (the SLO's bucket).
    e2e = "headrace_pipeline_end_to_end_seconds"
    assert got[(f"{e2e}_count", RELEASE)] == 7
    assert got[(f"{e2e}_bucket", RELEASE | {("le", "0.5")})] == 6
    assert got[(f"{e2e}_sum", RELEASE)] == pytest.approx(0.671)
    assert got[("headrace_pipeline_model_seconds_sum", RELEASE)] == pytest.approx(0.010)
    stage = "headrace_pipeline_stage_seconds_sum"
    assert got[(stage, RELEASE | {("stage", "decode")})] == pytest.approx(0.001)
    assert got[(stage, RELEASE | {("stage", "dedupe")})] == pytest.approx(0.0005)
    assert got[(stage, RELEASE | {("stage", "send")})] == pytest.approx(0.001)
    assert got[("headrace_pipeline_cpu_seconds_total", RELEASE)] > 0  # the process ran


def test_kept_observations_are_all_counted_across_folds_and_scrapes() -> None:
    """Batches are counted into buckets in groups and at every scrape: none is lost or
    counted twice, whichever comes first, with a scraper running alongside."""
    registry = new_registry(process=False)
    metrics = WorkerMetrics(registry, pipeline="scoring")
    stop = threading.Event()

    def scrape_until_stopped() -> None:
        while not stop.is_set():
            read(registry)

    scraper = threading.Thread(target=scrape_until_stopped)
    scraper.start()
    try:
        for _ in range(150):  # more than two groups of 64, and a remainder
            batch(metrics)
    finally:
        stop.set()
        scraper.join()
    got = read(registry)
    e2e = "headrace_pipeline_end_to_end_seconds"
    assert got[("headrace_pipeline_events_in_total", RELEASE)] == 1500
    assert got[("headrace_pipeline_batch_events_count", RELEASE)] == 150
    assert got[("headrace_pipeline_batch_events_sum", RELEASE)] == 1500
    assert got[(f"{e2e}_count", RELEASE)] == 150 * 7
    assert got[(f"{e2e}_bucket", RELEASE | {("le", "0.5")})] == 150 * 6
    assert got[("headrace_pipeline_model_seconds_sum", RELEASE)] == pytest.approx(1.5)
    assert read(registry) == got  # a scrape with nothing new changes nothing


def test_cpu_time_is_charged_to_the_release_that_scored() -> None:
    registry = new_registry(process=False)
    metrics = WorkerMetrics(registry, pipeline="scoring")
    metrics.observe_load("fraud:3", seconds=0.2, memory_bytes=None)  # restarts the clock
    spin_until = time.process_time() + 0.05
    while time.process_time() < spin_until:
        pass
    batch(metrics, "fraud:3")
    batch(metrics, "fraud:4")  # right after: almost nothing to charge
    got = read(registry)
    v3 = got[("headrace_pipeline_cpu_seconds_total", RELEASE)]
    v4 = got[
        (
            "headrace_pipeline_cpu_seconds_total",
            RELEASE - {("release", "fraud:3")} | {("release", "fraud:4")},
        )
    ]
    assert v3 >= 0.05
    assert v4 < 0.02


def test_each_release_keeps_its_own_series_across_a_swap() -> None:
    registry = new_registry(process=False)
    metrics = WorkerMetrics(registry, pipeline="scoring")
    batch(metrics, "fraud:3")
    batch(metrics, "fraud:4", events=5, outputs=5, dead_letter_stages=[], end_to_end_ms=None)
    got = read(registry)
    v4 = labels(pipeline="scoring", model="fraud", release="fraud:4")
    assert got[("headrace_pipeline_events_in_total", RELEASE)] == 10
    assert got[("headrace_pipeline_events_in_total", v4)] == 5
    assert got[("headrace_pipeline_end_to_end_seconds_count", v4)] == 0
    assert ("headrace_pipeline_dead_letters_total", v4 | {("stage", "validate")}) not in got


def test_lag_series_are_replaced_so_a_revoked_partition_disappears() -> None:
    registry = new_registry(process=False)
    metrics = WorkerMetrics(registry, pipeline="scoring")
    lag = "headrace_pipeline_consumer_lag_events"
    metrics.observe_lag({("tx", "0"): 40, ("tx", "1"): 2})
    got = read(registry)
    assert got[(lag, labels(pipeline="scoring", topic="tx", partition="0"))] == 40
    assert got[(lag, labels(pipeline="scoring", topic="tx", partition="1"))] == 2
    metrics.observe_lag({("tx", "1"): 0})
    assert [k for k in read(registry) if k[0] == lag] == [
        (lag, labels(pipeline="scoring", topic="tx", partition="1"))
    ]
    metrics.observe_lag(None)
    assert not [k for k in read(registry) if k[0] == lag]


def test_in_flight_is_read_when_scraped() -> None:
    registry = new_registry(process=False)
    metrics = WorkerMetrics(registry, pipeline="scoring")
    pending = [1, 2, 3]
    metrics.watch_in_flight(lambda: len(pending))
    key = ("headrace_pipeline_in_flight_events", labels(pipeline="scoring"))
    assert read(registry)[key] == 3
    pending.clear()
    assert read(registry)[key] == 0


def test_load_and_settle_are_reported() -> None:
    registry = new_registry(process=False)
    metrics = WorkerMetrics(registry, pipeline="scoring")
    metrics.observe_load("fraud:3", seconds=1.5, memory_bytes=25_000_000)
    metrics.observe_settle(0.02)
    metrics.observe_settle(0.7)
    got = read(registry)
    assert got[("headrace_pipeline_model_load_seconds", RELEASE)] == 1.5
    assert got[("headrace_pipeline_model_memory_bytes", RELEASE)] == 25_000_000
    settle = labels(pipeline="scoring")
    assert got[("headrace_pipeline_settle_seconds_count", settle)] == 2
    assert got[("headrace_pipeline_settle_seconds_bucket", settle | {("le", "0.5")})] == 1


def test_a_pipeline_name_is_required() -> None:
    with pytest.raises(ConfigError, match="pipeline's name"):
        WorkerMetrics(new_registry(process=False), pipeline="")


def test_buckets_are_the_servers_own() -> None:
    """One dashboard reads workers and servers: the same latency and batch buckets."""
    from headrace.serving import metrics as serving

    assert LATENCY_BUCKETS == serving.LATENCY_BUCKETS
    assert BATCH_BUCKETS == serving._BATCH_BUCKETS


def test_the_process_collector_is_on_by_default() -> None:
    names = {name for name, _ in read(new_registry())}
    assert "process_cpu_seconds_total" in names
    assert "process_cpu_seconds_total" not in {n for n, _ in read(new_registry(process=False))}


# -- drift ---------------------------------------------------------------------------


def test_drift_p_values_and_alarms_per_column() -> None:
    registry = new_registry(process=False)
    drift = DriftMetrics(registry, pipeline="scoring")
    drift.observe_p_values("fraud:3", {"amount": 0.001, "merchant": 0.4})
    drift.observe_alarm("fraud:3", ["amount"])
    drift.observe_alarm("fraud:3", ("amount",))
    drift.observe_alarm("fraud:3", [])  # an alarm that names no column still counts
    got = read(registry)
    amount = RELEASE | {("column", "amount")}
    assert got[("headrace_drift_p_value", amount)] == 0.001
    assert got[("headrace_drift_p_value", RELEASE | {("column", "merchant")})] == 0.4
    assert got[("headrace_drift_alarms_total", amount)] == 2
    assert got[("headrace_drift_alarms_total", RELEASE | {("column", "")})] == 1


# -- lag from sources ----------------------------------------------------------------


class PerPartition:
    topic = "tx"

    def __init__(self, lags: dict[tuple[str, int], int] | None) -> None:
        self.lags = lags

    def partition_lag(self) -> dict[tuple[str, int], int] | None:
        return self.lags

    def lag(self) -> int:  # pragma: no cover - partition_lag is preferred
        raise AssertionError("lag() asked although partition_lag() exists")


class TotalOnly:
    topic = "orders"

    def lag(self) -> int | None:
        return 12


def test_source_lag_per_partition_else_total_else_unknown() -> None:
    assert source_lag(PerPartition({("tx", 0): 3, ("tx", 2): 0})) == {
        ("tx", "0"): 3,
        ("tx", "2"): 0,
    }
    assert source_lag(PerPartition(None)) is None
    assert source_lag(TotalOnly()) == {("orders", "all"): 12}
    assert source_lag(object()) is None


def test_memory_source_reports_lag_per_partition() -> None:
    import uuid

    from headrace.streams.base import OutRecord
    from headrace.streams.memory import MemorySource, broker

    name = f"lag-{uuid.uuid4().hex[:8]}"
    memory = broker(name)
    memory.create_topic("events", partitions=2)
    memory.append("events", [OutRecord(value=b"{}", key=str(i).encode()) for i in range(40)])
    source = MemorySource(f"memory://{name}/events", group="g")
    source.open()
    try:
        got = source.poll(max_messages=10, timeout=1.0)  # joins the group, owns both
        lags = source_lag(source)
        assert lags is not None and set(lags) == {("events", "0"), ("events", "1")}
        assert sum(lags.values()) == 40 - len(got) == source.lag()
    finally:
        source.close()


# -- the HTTP endpoint ---------------------------------------------------------------


def test_serve_metrics_answers_scrapes_and_releases_its_port() -> None:
    registry = new_registry(process=False)
    metrics = WorkerMetrics(registry, pipeline="scoring")
    batch(metrics)
    server = serve_metrics(registry, port=0)
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=10) as answer:  # noqa: S310 - local URL
            body = answer.read().decode()
            content_type = answer.headers["Content-Type"]
        assert content_type.startswith("text/plain")
        assert 'headrace_pipeline_events_in_total{model="fraud",pipeline="scoring"' in body
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


def test_serve_metrics_refuses_a_taken_port_with_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"Cannot serve metrics on 127.0.0.1:{port}: .*--metrics-port"
        ):
            serve_metrics(new_registry(process=False), port=port)


@pytest.mark.parametrize("port", [-1, 65536])
def test_serve_metrics_refuses_a_port_out_of_range(port: int) -> None:
    with pytest.raises(ConfigError, match=rf"Metrics port {port} is not within 0..65535"):
        serve_metrics(new_registry(process=False), port=port)


def test_serve_metrics_refuses_an_unknown_host() -> None:
    with pytest.raises(
        ConfigError, match=r"Cannot serve metrics on no-such-host\.invalid:0: .*--metrics-host"
    ):
        serve_metrics(new_registry(process=False), port=0, host="no-such-host.invalid")
