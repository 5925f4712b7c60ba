"""The Redis Streams entry layout against a real Redis (issue 9, "File sources").

Today's layout puts the event in a field named ``value``; ``value_field`` names another
field, and ``value_field: "*"`` reads an entry's own fields as the event, typed per schema
field by the worker as CSV cells are. Each entry is scored or dead-lettered by a worker,
and acknowledged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from tests.unit.pipeline.test_worker import service

from headrace.errors import ConfigError
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.pipeline.worker import Worker
from headrace.streams.memory import MemorySink, broker
from headrace.streams.redis import RedisStreamSink, RedisStreamSource

pytestmark = pytest.mark.redis


@pytest.fixture
def stream(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    key = f"headrace-test:{uuid.uuid4().hex[:12]}"
    try:
        yield client, key
    finally:
        client.delete(key)
        client.close()


def _score(
    redis_url: str, key: str, *, value_field: str, events: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    name = f"layout-{uuid.uuid4().hex[:8]}"
    b = broker(name)
    options = {"value_field": value_field, "claim_idle_ms": 0}
    spec = pipeline_spec_from_dict(
        {
            "name": "layout",
            "model": "fraud:1",
            "source": {"url": redis_url, "topic": key, "group": "g", "options": options},
            "outputs": [{"url": f"memory://{name}/scores"}],
            "dead_letter": {"url": f"memory://{name}/dlq"},
            "id_field": "event_id",
            "event_time_field": "ts",
            "batch": {"max_size": 16, "max_wait_ms": 5},
        }
    )
    Worker(
        spec,
        service=service(),
        source=RedisStreamSource(redis_url, topic=key, group="g", options=options),
        outputs=[MemorySink(f"memory://{name}/scores")],
        dead_letter=MemorySink(f"memory://{name}/dlq"),
        dedupe=None,
    ).run(max_events=events)
    outputs = [orjson.loads(m.value) for m in b.messages("scores")]
    dead = [orjson.loads(m.value) for m in b.messages("dlq")]
    return outputs, dead


def test_value_field_names_the_field_holding_the_event(
    redis_url: str, stream: tuple[redis.Redis, str]
) -> None:
    client, key = stream
    for i in range(5):
        body = {"event_id": f"e{i}", "amount": 10.0 * i, "merchant": "food"}
        client.xadd(key, {"payload": orjson.dumps(body), "value": b"not this one"})
    outputs, dead = _score(redis_url, key, value_field="payload", events=5)
    assert sorted(o["event_id"] for o in outputs) == [f"e{i}" for i in range(5)] and not dead
    assert client.xpending(key, "g")["pending"] == 0  # acknowledged


def test_value_field_star_reads_the_entry_fields_typed_by_the_schema(
    redis_url: str, stream: tuple[redis.Redis, str]
) -> None:
    client, key = stream
    for i in range(4):
        client.xadd(
            key,
            {"event_id": f"e{i}", "amount": str(100.5 * i), "merchant": "travel", "ts": "1.7e9"},
        )
    client.xadd(key, {"event_id": "bad", "amount": "lots", "merchant": "food"})
    client.xadd(key, {"event_id": "bin", "amount": b"\xff\xfe", "merchant": "food"})
    outputs, dead = _score(redis_url, key, value_field="*", events=6)
    assert sorted(o["event_id"] for o in outputs) == [f"e{i}" for i in range(4)]
    assert {o["event_time_ms"] for o in outputs} == {1_700_000_000_000}
    reasons = sorted((d["stage"], d["error"]) for d in dead)
    assert reasons[0][0] == "decode" and "'amount' is not UTF-8 text" in reasons[0][1]
    assert reasons[1][0] == "validate" and "$.amount" in reasons[1][1]
    assert client.xpending(key, "g")["pending"] == 0


def test_value_field_star_is_refused_for_a_sink(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="sources only"):
        RedisStreamSink(redis_url, topic="t", options={"value_field": "*"})
