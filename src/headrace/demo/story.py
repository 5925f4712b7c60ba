"""``headrace demo``: the whole story on embedded defaults, nothing else running.

Generate card transactions, train and register a fraud model, stream the events (with a
sprinkle of malformed ones) through the in-process broker into a real pipeline worker,
and summarise: throughput, latency percentiles, dead letters and their reasons, where the
outputs are, and an audit chain that verifies. Later issues extend the same story
(serving, drift, rollouts).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from headrace.demo.data import (
    FEATURES,
    FEATURES_YAML,
    SCHEMA_YAML,
    event_stream,
    generate,
    training_matrix,
)

if TYPE_CHECKING:
    from headrace.demo.serving import ServingBeside, ServingReport
    from headrace.registry.store import Registry

__all__ = ["DemoResult", "run_demo"]

Say = Callable[[str], None]
Progress = Callable[[int, int], None]


@dataclass
class DemoResult:
    """What the demo did, for its summary (and for tests)."""

    home: Path
    release: str = ""
    digest: str = ""
    auc: float = 0.0
    events: int = 0
    malformed_sent: Counter[str] = field(default_factory=Counter)
    stats: dict[str, Any] = field(default_factory=dict)
    outputs_path: Path | None = None
    dead_letters_path: Path | None = None
    flagged: int = 0
    audit_records: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    serving: ServingReport | None = None


def _train(home: Path, *, rows: int, seed: int) -> tuple[Path, float]:
    """Train a gradient-boosted fraud model; write the release inputs under `home`."""
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from headrace.demo.data import MERCHANTS

    data = generate(rows, seed=seed)
    x = training_matrix(data)
    y = data.is_fraud.astype(int)
    cut = int(rows * 0.8)
    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=0)
    model.fit(x[:cut], y[:cut])
    auc = float(roc_auc_score(y[cut:], model.predict_proba(x[cut:])[:, 1]))
    out = home / "release-1"
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "model.pkl")
    (out / "schema.yaml").write_text(SCHEMA_YAML)
    (out / "features.yaml").write_text(FEATURES_YAML)
    (out / "config.yaml").write_text("threshold: 0.5\nlabels: [legit, fraud]\n")
    (out / "metrics.json").write_text(
        orjson.dumps({"auc": auc, "fraud_rate": float(y.mean())}).decode()
    )
    table = pa.table(
        {
            "amount": data.amount,
            "hour": data.hour,
            "merchant": pa.array([MERCHANTS[i] for i in data.merchant]),
            "distance_km": data.distance_km,
            "card_present": data.card_present,
            "tx_last_24h": data.tx_last_24h,
            "is_fraud": data.is_fraud,
        }
    )
    pq.write_table(table, out / "train.parquet")
    return out, auc


def _produce(
    broker: Any,
    topic: str,
    payloads: list[tuple[bytes, bytes]],
    *,
    rate: float,
    stop: threading.Event,
) -> None:
    """Append events at about `rate` per second, as a live source would deliver them."""
    from headrace.streams.base import OutRecord

    chunk = max(1, int(rate / 100))
    started = time.monotonic()
    for begin in range(0, len(payloads), chunk):
        if stop.is_set():
            return
        part = payloads[begin : begin + chunk]
        broker.append(topic, [OutRecord(value=value, key=key) for key, value in part])
        ahead = (begin + len(part)) / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)


def _serve_beside(registry: Registry, *, seed: int, say: Say) -> ServingBeside:
    """The HTTP server on an ephemeral port, asked a few OIP questions while the stream runs."""
    from headrace.demo.serving import serve_beside_stream

    serving = serve_beside_stream(registry, generate(200, seed=seed + 3))
    if serving.skipped:
        say(f"    no HTTP server beside the stream: {serving.skipped}")
    else:
        say(f"    the HTTP server answers OIP requests beside the stream at {serving.url}/v2")
    return serving


def run_demo(
    *,
    events: int = 50_000,
    home: Path | None = None,
    rate: float = 25_000.0,
    malformed_rate: float = 0.01,
    seed: int = 42,
    say: Say = print,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the demo end to end and return what happened.

    Parameters
    ----------
    events
        Transactions to stream.
    home
        Where the demo's registry, artifacts and outputs go (wiped first); a temporary
        directory when None.
    rate
        Events per second the producer offers (a live stream, not a backlog).
    say, progress
        Where narration goes, and a callback ``(done, total)`` while streaming.
    """
    from headrace.inference.loading import verify_draft
    from headrace.pipeline.build import build_worker
    from headrace.pipeline.spec import pipeline_spec_from_dict
    from headrace.registry.store import Registry
    from headrace.release.bundle import build_draft
    from headrace.streams.memory import broker as named_broker

    home = home or Path(tempfile.mkdtemp(prefix="headrace-demo-"))
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    result = DemoResult(home=home)

    say("1/5 training a fraud model on 20,000 generated card transactions")
    model_dir, result.auc = _train(home, rows=20_000, seed=seed)
    say(f"    gradient-boosted trees, held-out AUC {result.auc:.3f}")

    say("2/5 registering it as release fraud:1 (champion)")
    registry = Registry(
        f"sqlite:///{home / 'registry.db'}",
        artifacts=f"file://{home / 'artifacts'}",
        actor="headrace-demo",
        cache_dir=home / "cache",
    )
    with registry, tempfile.TemporaryDirectory(prefix="headrace-draft-") as scratch:
        draft = build_draft(
            model_dir / "model.pkl",
            name="fraud",
            flavor="sklearn",
            workdir=Path(scratch),
            schema_path=model_dir / "schema.yaml",
            features_path=model_dir / "features.yaml",
            data_path=model_dir / "train.parquet",
            metrics_path=model_dir / "metrics.json",
            config_path=model_dir / "config.yaml",
        )
        verify_draft(draft)
        release = registry.register(draft, alias="champion", reason="demo: first model")
        result.release, result.digest = release.ref, release.digest
        say(f"    {release.ref} digest {release.digest[:16]}..., inputs {', '.join(FEATURES)}")

        say(
            f"3/5 streaming {events:,} transactions ({malformed_rate:.0%} malformed) through "
            "the pipeline"
        )
        stream = generate(events, seed=seed + 1, start_ts=1_790_700_000.0)
        payloads: list[tuple[bytes, bytes]] = []
        for key, value, kind in event_stream(stream, malformed_rate=malformed_rate, seed=seed + 2):
            payloads.append((key, value))
            if kind is not None:
                result.malformed_sent[kind] += 1
        result.events = len(payloads)
        broker_name = f"demo-{id(result):x}"
        broker = named_broker(broker_name)
        broker.create_topic("transactions", partitions=4)
        outputs = home / "outputs"
        spec = pipeline_spec_from_dict(
            {
                "name": "fraud-scoring",
                "model": "fraud@champion",
                "source": {"url": f"memory://{broker_name}/transactions", "group": "fraud-scoring"},
                "outputs": [{"url": f"file://{outputs / 'fraud-scores.jsonl'}"}],
                "dead_letter": {"url": f"file://{outputs / 'dead-letters.jsonl'}"},
                "id_field": "event_id",
                "batch": {"max_size": 512, "max_wait_ms": 5},
                "limits": {"max_event_bytes": 65_536},
                "stats_interval_s": 0.2,
            },
            where="demo pipeline",
        )
        total = result.events

        def report(stats: Any) -> None:
            if progress is not None:
                progress(stats.events, total)

        worker = build_worker(spec, registry=registry, home=home, on_stats=report)
        serving = _serve_beside(registry, seed=seed, say=say)
        stop = threading.Event()
        producer = threading.Thread(
            target=_produce,
            args=(broker, "transactions", payloads),
            kwargs={"rate": rate, "stop": stop},
            name="demo-producer",
            daemon=True,
        )
        producer.start()
        try:
            stats = worker.run(max_events=total)
        finally:
            stop.set()
            producer.join(timeout=10)
        if progress is not None:
            progress(stats.events, total)
        result.stats = stats.summary()
        result.outputs_path = outputs / "fraud-scores.jsonl"
        result.dead_letters_path = outputs / "dead-letters.jsonl"
        result.serving = serving.finish()

        say("4/5 checking the outputs")
        flagged = 0
        with result.outputs_path.open("rb") as handle:
            for line in handle:
                record = orjson.loads(line)
                if record["prediction"] == "fraud":
                    flagged += 1
                    if len(result.examples) < 3:
                        result.examples.append(record)
        result.flagged = flagged

        say("5/5 verifying the audit chain")
        result.audit_records = registry.verify_audit()
    return result
