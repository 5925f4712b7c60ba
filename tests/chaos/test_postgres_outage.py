"""The PostgreSQL registry unreachable under a running worker and a running server.

A cluster of the test's own (initdb, pg_ctl) holds the registry; it is stopped by its
pid (fast shutdown: every client connection cut) and started again. The registry is
needed to start, not to score: the worker keeps scoring a live Kafka stream and the
server keeps answering from the releases it loaded; once PostgreSQL is back, an alias
move reaches the server on its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import requests

from chaos.faults import PostgresServer, sized
from conftest import LOCALHOST, port_open
from support.kafka import (
    IdTracker,
    Producer,
    TopicReader,
    WorkerProcess,
    create_topic,
    write_pipeline,
)
from support.models import N_FEATURES, draft_from, local_registry, write_sklearn_release
from support.serving import free_port, running_server

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.remove()


def events(count: int, *, start: int, rng: np.random.Generator) -> list[tuple[bytes, bytes]]:
    x = rng.normal(0.0, 1.0, size=(count, N_FEATURES))
    items = []
    for i in range(count):
        event = {"event_id": f"pg-{start + i}", **{f"f{j}": float(x[i, j]) for j in range(5)}}
        items.append((f"k{i % 97}".encode(), orjson.dumps(event)))
    return items


def infer(url: str, rows: np.ndarray) -> Any:
    body = {
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}
        ]
    }
    return requests.post(f"{url}/v2/models/fraud/infer", json=body, timeout=30)


def test_registry_down_workers_score_servers_serve_alias_moves_resume(
    kafka_broker: str, private_postgres: PostgresServer, tmp_path: Path, seed: int
) -> None:
    """CI: PostgreSQL down 5 s, 3k events and a request every 50 ms meanwhile; long
    (``HEADRACE_CHAOS_LONG=1``): down 20 s, 20k events."""
    down_s, during = sized((5.0, 3_000), (20.0, 20_000))
    rng = np.random.default_rng(seed)
    root = tmp_path / "registry"
    artifacts = f"file://{root / 'artifacts'}"
    with local_registry(root, url=private_postgres.url) as registry:
        v1 = write_sklearn_release(root / "fraud-1", seed=7)
        registry.register(draft_from(v1, root / "fraud-1"), alias="champion")
        v2 = write_sklearn_release(root / "fraud-2", seed=8, c=0.05)
        registry.register(draft_from(v2, root / "fraud-2"))

    source = create_topic(kafka_broker, partitions=4)
    outputs = create_topic(kafka_broker, partitions=4)
    dead = create_topic(kafka_broker, partitions=4)
    spec = write_pipeline(
        tmp_path / "pipeline.yaml",
        name=f"chaos-pg-{uuid.uuid4().hex[:8]}",
        bootstrap=kafka_broker,
        source=source,
        outputs=outputs,
        dead_letter=dead,
    )
    env = {"HEADRACE_REGISTRY": private_postgres.url, "HEADRACE_ARTIFACTS": artifacts}
    worker = WorkerProcess(spec, home=tmp_path / "home", log_dir=tmp_path, label="worker", env=env)
    producer = Producer(kafka_broker, source)
    reader = TopicReader(kafka_broker, outputs, partitions=4)
    seen = IdTracker(reader)
    rows = rng.normal(0.0, 1.0, size=(4, N_FEATURES))
    try:
        with (
            local_registry(root, url=private_postgres.url) as served,
            running_server(served, port=free_port(), settings={"poll_interval_s": 0.2}) as server,
        ):
            assert infer(server.url, rows).json()["model_version"] == "1"
            producer.send(events(500, start=0, rng=rng))
            reader.wait_for(
                seen.at_least(500), timeout=60, what="warm-up", alive=worker.check_alive
            )

            private_postgres.stop()
            assert not port_open(LOCALHOST, private_postgres.port)
            down_since = time.monotonic()
            producer.start(events(during, start=500, rng=rng), rate=during / down_s)
            answered = 0
            while time.monotonic() - down_since < down_s or seen.count() < 500 + during:
                worker.check_alive()
                response = infer(server.url, rows)
                assert response.status_code == 200, response.text
                assert response.json()["model_version"] == "1"
                answered += 1
                reader.poll(0.05)
                assert time.monotonic() - down_since < down_s + 90, "scoring stalled"
            assert not port_open(LOCALHOST, private_postgres.port)  # still down throughout
            outage = time.monotonic() - down_since
            producer.join()

            private_postgres.start()
            with local_registry(root, url=private_postgres.url) as registry:
                registry.set_alias("fraud", "champion", 2)
            moved = time.monotonic()
            while infer(server.url, rows).json()["model_version"] != "2":
                assert time.monotonic() - moved < 60, "the alias move never reached the server"
                time.sleep(0.1)
        stats = worker.terminate()
    finally:
        worker.stop()
        producer.close()
        reader.close()
    assert stats["outputs"] == 500 + during
    print(
        f"\nPostgreSQL down {outage:.1f}s: the worker scored {during:,} events meanwhile, the "
        f"server answered {answered} requests (all 200); the alias move after it returned "
        "reached the server"
    )
