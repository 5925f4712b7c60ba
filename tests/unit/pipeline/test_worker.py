"""The worker on the in-process broker: nothing lost, bad events dead-lettered, repeats
dropped, offsets committed only after the sinks acknowledged.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from headrace.errors import CommitRefusedError, ConfigError, SinkError
from headrace.inference.service import InferenceService
from headrace.pipeline.dedupe import MemoryDedupe
from headrace.pipeline.records import IDEMPOTENCY_HEADER
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.pipeline.worker import Worker
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.base import ModelOutput
from headrace.runtimes.testing import FailingModel
from headrace.streams.base import OutRecord
from headrace.streams.memory import MemoryBroker, MemorySink, MemorySource, broker
from headrace.types import Matrix

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float", min=0, max=1000),
        Field(name="merchant", type="category", values=["food", "travel"]),
    ]
)


class Threshold:
    """A tiny real model: P(fraud) rises with the amount."""

    flavor = "python"

    def predict(self, matrix: Matrix) -> ModelOutput:
        p = np.clip(np.asarray(matrix[:, 0], dtype=float) / 1000.0, 0, 1)
        proba = np.column_stack([1 - p, p])
        return ModelOutput(
            predictions=(p >= 0.5).astype(int), probabilities=proba, classes=np.array([0, 1])
        )


def service(model: Any = None) -> InferenceService:
    return InferenceService(
        model or Threshold(),
        schema=SCHEMA,
        inputs=["amount", "merchant"],
        config=ReleaseConfig(threshold=0.5, labels=["legit", "fraud"]),
        release="fraud:1",
        release_digest="d" * 64,
    )


class Rig:
    """A broker, a worker factory and readers for its outputs."""

    def __init__(self) -> None:
        self.name = f"test-{uuid.uuid4().hex[:8]}"
        self.broker: MemoryBroker = broker(self.name)
        self.broker.create_topic("events", partitions=3)
        self.spec = pipeline_spec_from_dict(
            {
                "name": "scoring",
                "model": "fraud:1",
                "source": {"url": f"memory://{self.name}/events", "group": "scoring"},
                "outputs": [{"url": f"memory://{self.name}/scores"}],
                "dead_letter": {"url": f"memory://{self.name}/dlq"},
                "id_field": "event_id",
                "batch": {"max_size": 64, "max_wait_ms": 1},
                "limits": {"max_event_bytes": 2048},
            }
        )

    def produce(self, values: list[bytes]) -> None:
        self.broker.append(
            "events", [OutRecord(value=v, key=str(i % 7).encode()) for i, v in enumerate(values)]
        )

    def worker(self, *, model: Any = None, dedupe: Any = None) -> Worker:
        return Worker(
            self.spec,
            service=service(model),
            source=MemorySource(f"memory://{self.name}/events", group="scoring"),
            outputs=[MemorySink(f"memory://{self.name}/scores")],
            dead_letter=MemorySink(f"memory://{self.name}/dlq"),
            dedupe=dedupe,
        )

    def outputs(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.value) for m in self.broker.messages("scores")]

    def dead(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.value) for m in self.broker.messages("dlq")]


def event(i: int, **override: Any) -> bytes:
    body: dict[str, Any] = {"event_id": f"e{i}", "amount": float(i % 900), "merchant": "food"}
    body.update(override)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


BAD: dict[str, Callable[[int], bytes]] = {
    "undecodable": lambda i: b'{"event_id": "e%d", "amount": ' % i,
    "wrong type": lambda i: event(i, amount="12"),
    "missing field": lambda i: event(i, merchant=...),
    "out of range": lambda i: event(i, amount=5000.0),
    "unknown category": lambda i: event(i, merchant="casino"),
    "NaN": lambda i: event(i).replace(b'"amount":' + orjson.dumps(float(i % 900)), b'"amount":NaN'),
    "null": lambda i: event(i, merchant=None),
    "missing id": lambda i: event(i, event_id=...),
    "oversized": lambda i: event(i, note="x" * 4096),
    "not an object": lambda i: b"[1, 2, 3]",
}


def test_every_event_gets_an_output_or_a_dead_letter() -> None:
    rig = Rig()
    values, bad_ids = [], {}
    for i in range(1000):
        if i % 50 == 7:
            kind = list(BAD)[(i // 50) % len(BAD)]
            values.append(BAD[kind](i))
            bad_ids[i] = kind
        else:
            values.append(event(i))
    rig.produce(values)
    stats = rig.worker().run(max_events=1000)
    outputs, dead = rig.outputs(), rig.dead()
    assert stats.events == 1000 and len(outputs) == 1000 - len(bad_ids)
    assert len(dead) == len(bad_ids)
    assert {o["event_id"] for o in outputs} == {f"e{i}" for i in range(1000) if i not in bad_ids}
    for letter in dead:
        assert letter["error"] and letter["stage"] in ("decode", "validate")
        assert "events[" in letter["source"]["position"]
        assert base64.b64decode(letter["payload"])  # the original bytes
    assert rig.broker.lag("scoring", "events") == 0
    first = outputs[0]
    assert first["release"] == "fraud:1" and first["prediction"] in ("legit", "fraud")
    assert 0.0 <= first["score"] <= 1.0
    assert first["idempotency_key"] == f"{first['event_id']}:{'d' * 64}"
    headers = dict(rig.broker.messages("scores")[0].headers)
    assert headers[IDEMPOTENCY_HEADER] == first["idempotency_key"].encode()


def test_dead_letters_keep_key_and_headers() -> None:
    rig = Rig()
    rig.broker.append(
        "events", [OutRecord(value=b"nope", key=b"k1", headers=[("traceparent", b"00-abc")])]
    )
    rig.worker().run(max_events=1)
    letter = rig.broker.messages("dlq")[0]
    assert letter.key == b"k1" and ("traceparent", b"00-abc") in letter.headers


def test_poison_event_is_isolated_and_the_rest_of_its_batch_scored() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(64)])
    poisoned = FailingModel(fail_when=lambda m: np.asarray(m[:, 0]) == 13.0, model=Threshold())
    stats = rig.worker(model=poisoned).run(max_events=64)
    assert stats.outputs == 63
    (letter,) = rig.dead()
    assert letter["stage"] == "predict" and "RuntimeError" in letter["error"]
    assert base64.b64decode(letter["payload"]) == event(13)


def test_sink_failure_commits_nothing_and_a_restart_redelivers() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(200)])
    rig.broker.fail_next_flush("scores")
    dedupe = MemoryDedupe(ttl_s=60, max_keys=10_000)  # stands in for Redis across restarts
    with pytest.raises(SinkError):
        rig.worker(dedupe=dedupe).run(max_events=200)
    assert rig.broker.lag("scoring", "events") == 200  # nothing committed
    stats = rig.worker(dedupe=dedupe).run(max_events=200)
    assert stats.events == 200
    ids = [o["event_id"] for o in rig.outputs()]
    assert sorted(ids) == sorted(f"e{i}" for i in range(200))  # none lost, none twice


def test_repeats_are_dropped_within_and_across_batches() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(100)] + [event(5), event(5), event(42)])
    stats = rig.worker(dedupe=MemoryDedupe(ttl_s=60, max_keys=1000)).run(max_events=103)
    assert stats.deduplicated == 3
    assert len(rig.outputs()) == 100


def test_without_dedupe_repeats_pass_with_the_same_idempotency_key() -> None:
    rig = Rig()
    rig.produce([event(1), event(1)])
    rig.worker(dedupe=None).run(max_events=2)
    first, second = rig.outputs()
    assert first["idempotency_key"] == second["idempotency_key"]


def test_stats_report_lag_while_running() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(300)])
    seen: list[int | None] = []
    worker = rig.worker()
    worker.spec = msgspec.structs.replace(rig.spec, stats_interval_s=0.0)
    worker.on_stats = lambda stats: seen.append(stats.lag)
    worker.run(max_events=300)
    assert seen and seen[0] is not None and seen[0] > 0  # a backlog after the first batch
    assert seen[-1] is not None and seen[-1] < seen[0]


class RefusingSource(MemorySource):
    """A member whose group moved on: every commit is refused, as after a long stall."""

    def commit(self, messages: Any) -> None:
        raise CommitRefusedError("Unknown member (UNKNOWN_MEMBER_ID)")


def test_a_refused_commit_is_logged_and_the_worker_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(100)])
    worker = rig.worker()
    worker.source = RefusingSource(f"memory://{rig.name}/events", group="scoring")
    stats = worker.run(max_events=100)
    assert stats.outputs == 100  # the outputs were acknowledged; the events come again later
    assert "UNKNOWN_MEMBER_ID" in caplog.text
    assert rig.broker.lag("scoring", "events") == 100


def test_until_end_is_refused_for_a_source_without_an_end() -> None:
    rig = Rig()
    with pytest.raises(ConfigError, match="--until-end needs a source with an end"):
        rig.worker().run(until_exhausted=True)
