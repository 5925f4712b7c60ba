"""A worker with `WorkerMetrics` on the in-process broker: the exposition agrees with the
worker's own stats, and no label ever carries an event id or a value."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from headrace.inference.service import InferenceService
from headrace.monitoring.metrics import WorkerMetrics, exposition, new_registry
from headrace.pipeline.dedupe import MemoryDedupe
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.pipeline.worker import Worker
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.base import ModelOutput
from headrace.streams.base import OutRecord
from headrace.streams.memory import MemorySink, MemorySource, broker
from headrace.types import Matrix

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float", min=0, max=1000),
        Field(name="merchant", type="category", values=["food", "travel"]),
    ]
)


class Threshold:
    """P(fraud) rises with the amount; raises on an amount of exactly 666 (a poison event)."""

    flavor = "python"

    def predict(self, matrix: Matrix) -> ModelOutput:
        amount = np.asarray(matrix[:, 0], dtype=float)
        if (amount == 666.0).any():
            raise ValueError("poison amount")
        p = np.clip(amount / 1000.0, 0, 1)
        return ModelOutput(
            predictions=(p >= 0.5).astype(int),
            probabilities=np.column_stack([1 - p, p]),
            classes=np.array([0, 1]),
        )


def event(i: int, **override: Any) -> bytes:
    body: dict[str, Any] = {
        "event_id": f"evt-{i}",
        "amount": float(i % 600),
        "merchant": "food",
        "ts": 1_700_000_000 + i,
    }
    body.update(override)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def scrape(registry: Any) -> list[Any]:
    text = exposition(registry)[0].decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_the_exposition_agrees_with_the_worker_and_keeps_values_out_of_labels() -> None:
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    memory = broker(name)
    memory.create_topic("events", partitions=3)
    good = [event(i) for i in range(400)]
    bad = [
        b'{"event_id": "evt-bad-1", "amount": ',  # undecodable
        event(1001, amount=5000.0),  # out of range
        event(1002, merchant="casino-secret-value"),  # not a category
        event(1003, event_id=...),  # no id
        event(1004, amount=666.0),  # the model raises
    ]
    repeats = [event(i) for i in range(10)]
    memory.append(
        "events",
        [OutRecord(value=v, key=str(i % 7).encode()) for i, v in enumerate(good + bad + repeats)],
    )
    spec = pipeline_spec_from_dict(
        {
            "name": "scoring",
            "model": "fraud:1",
            "source": {"url": f"memory://{name}/events", "group": "scoring"},
            "outputs": [{"url": f"memory://{name}/scores"}],
            "dead_letter": {"url": f"memory://{name}/dlq"},
            "id_field": "event_id",
            "event_time_field": "ts",
            "batch": {"max_size": 64, "max_wait_ms": 1},
            "stats_interval_s": 0.0,
        }
    )
    registry = new_registry(process=False)
    metrics = WorkerMetrics(registry, pipeline="scoring")
    service = InferenceService(
        Threshold(),
        schema=SCHEMA,
        inputs=["amount", "merchant"],
        config=ReleaseConfig(threshold=0.5, labels=["legit", "fraud"]),
        release="fraud:1",
        release_digest="d" * 64,
    )
    worker = Worker(
        spec,
        service=service,
        source=MemorySource(f"memory://{name}/events", group="scoring"),
        outputs=[MemorySink(f"memory://{name}/scores")],
        dead_letter=MemorySink(f"memory://{name}/dlq"),
        dedupe=MemoryDedupe(ttl_s=60, max_keys=10_000),
        metrics=metrics,
    )
    stats = worker.run(max_events=len(good) + len(bad) + len(repeats))
    samples = scrape(registry)
    release = {"pipeline": "scoring", "model": "fraud", "release": "fraud:1"}

    assert stats.outputs == 400 and stats.dead_letters == 5 and stats.deduplicated == 10
    assert value(samples, "headrace_pipeline_events_in_total", **release) == stats.events == 415
    assert value(samples, "headrace_pipeline_events_out_total", **release) == 400
    assert value(samples, "headrace_pipeline_deduplicated_total", **release) == 10
    dead = "headrace_pipeline_dead_letters_total"
    assert value(samples, dead, **release) == 5
    assert value(samples, dead, stage="decode") == 1
    assert value(samples, dead, stage="validate") == 3
    assert value(samples, dead, stage="predict") == 1
    assert value(samples, "headrace_pipeline_batch_events_count", **release) == stats.batches
    assert value(samples, "headrace_pipeline_batch_events_sum", **release) == 415
    # The event times are from 2023: every output is far past 10 s, in the +Inf bucket only.
    e2e = "headrace_pipeline_end_to_end_seconds"
    assert value(samples, f"{e2e}_count", **release) == 400
    assert value(samples, f"{e2e}_bucket", le="10.0") == 0
    assert value(samples, "headrace_pipeline_model_seconds_count", **release) == stats.batches
    for stage in ("decode", "dedupe", "send"):
        count = value(samples, "headrace_pipeline_stage_seconds_count", stage=stage)
        assert count == stats.batches, stage
    assert value(samples, "headrace_pipeline_settle_seconds_count", pipeline="scoring") >= 1
    assert value(samples, "headrace_pipeline_in_flight_events", pipeline="scoring") == 0
    lags = [s for s in samples if s.name == "headrace_pipeline_consumer_lag_events"]
    assert {s.labels["partition"] for s in lags} <= {"0", "1", "2"} and lags
    assert all(s.labels["topic"] == "events" for s in lags)
    assert value(samples, "headrace_pipeline_cpu_seconds_total", **release) > 0

    # Bounded cardinality: ids, values and reasons never become label values.
    label_values = {v for s in samples for v in s.labels.values()}
    leaked = {v for v in label_values if "evt-" in v or "casino" in v or "5000" in v}
    assert not leaked
    assert {s.labels.get("stage") for s in samples if s.name == dead} == {
        "decode",
        "validate",
        "predict",
    }


def test_lag_is_read_for_metrics_even_without_a_stats_callback() -> None:
    name = f"lag-{uuid.uuid4().hex[:8]}"
    memory = broker(name)
    memory.create_topic("events", partitions=2)
    memory.append("events", [OutRecord(value=event(i), key=str(i).encode()) for i in range(300)])
    spec = pipeline_spec_from_dict(
        {
            "name": "scoring",
            "model": "fraud:1",
            "source": {"url": f"memory://{name}/events", "group": "scoring"},
            "outputs": [{"url": f"memory://{name}/scores"}],
            "dead_letter": {"url": f"memory://{name}/dlq"},
            "id_field": "event_id",
            "batch": {"max_size": 50, "max_wait_ms": 1},
        }
    )
    registry = new_registry(process=False)
    seen: list[float] = []

    class Watching(WorkerMetrics):
        def observe_lag(self, lags: Any) -> None:
            super().observe_lag(lags)
            seen.append(value(scrape(registry), "headrace_pipeline_consumer_lag_events"))

    worker = Worker(
        msgspec.structs.replace(spec, stats_interval_s=0.0),
        service=InferenceService(
            Threshold(),
            schema=SCHEMA,
            inputs=["amount", "merchant"],
            config=ReleaseConfig(threshold=0.5),
            release="fraud:1",
            release_digest="d" * 64,
        ),
        source=MemorySource(f"memory://{name}/events", group="scoring"),
        outputs=[MemorySink(f"memory://{name}/scores")],
        dead_letter=MemorySink(f"memory://{name}/dlq"),
        dedupe=None,
        metrics=Watching(registry, pipeline="scoring"),
    )
    assert worker.on_stats is None
    worker.run(max_events=300)
    assert seen and seen[0] > 0  # a backlog after the first batch
    assert seen[-1] < seen[0]
