"""The contenders, each run as a child process: a bare client loop or a headrace worker."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from streambench.data import BATCH, FAST_GROUP, HERE, WAIT_MS, registry_for


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
            str(HERE / "stream_throughput.py"),
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
    from headrace.pipeline import build_worker, pipeline_spec_from_dict, tune_worker_process

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
    tune_worker_process()  # as `headrace run` does
    stats = worker.run(stop=stop, max_events=args.max_events or None)
    print(orjson.dumps(stats.summary()).decode(), flush=True)
