"""``headrace demo``: the whole story on embedded defaults, nothing else running.

Generate card transactions, train and register a fraud model, stream the events (with a
sprinkle of malformed ones) through the in-process broker into a real pipeline worker,
and summarise: throughput, latency percentiles, dead letters and their reasons, where the
outputs are, and an audit chain that verifies. Partway through, the stream drifts (a new
merchant mix, larger amounts): the worker's drift monitor raises an alarm, the true
fraud labels come back late on a feedback topic for live accuracy, and an HTML drift
report compares the reference with the drifted traffic. The HTTP server answers beside
the stream (demo/serving.py). The alarm starts the second act (demo/rollout.py): retrain
on the labelled events after the drift, gate, shadow, canary, and the running worker's
own verdict; the report and the audit chain carry it too.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from headrace.demo.data import (
    FEATURES,
    MERCHANTS,
    Transactions,
    event_stream,
    generate,
    generate_drifting,
)
from headrace.demo.rollout import RolloutReport, RolloutStory
from headrace.demo.training import register_trained, train_first

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
    threshold: float = 0.5
    validation: dict[str, float] = field(default_factory=dict)
    events: int = 0
    malformed_sent: Counter[str] = field(default_factory=Counter)
    stats: dict[str, Any] = field(default_factory=dict)
    outputs_path: Path | None = None
    dead_letters_path: Path | None = None
    flagged: int = 0
    audit_records: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    serving: ServingReport | None = None
    drift_at: int = 0
    drift_event: str = ""
    drift_columns: list[str] = field(default_factory=list)
    drift_threshold: float = 0.0
    calibration_s: float = 0.0
    calibration_checks: int = 0
    alarms: list[dict[str, Any]] = field(default_factory=list)
    drift_repeats: int = 0
    release_tags: dict[str, str] = field(default_factory=dict)
    labels_sent: int = 0
    accuracy: dict[str, Any] | None = None
    report_path: Path | None = None
    report_drifted: list[str] = field(default_factory=list)
    rollout: RolloutReport | None = None
    outputs_by_release: dict[str, int] = field(default_factory=dict)
    last_outputs: tuple[str, int] = ("", 0)
    accuracy_by_release: dict[str, dict[str, Any]] = field(default_factory=dict)


def _produce(
    broker: Any,
    topic: str,
    payloads: list[tuple[bytes, bytes]],
    *,
    rate: float,
    stop: threading.Event,
    labels: list[bytes | None] | None = None,
    label_topic: str = "",
    label_delay_s: float = 0.0,
    labelled: list[int] | None = None,
) -> None:
    """Append events at about `rate` per second, as a live source would deliver them, and
    each event's label (if any) `label_delay_s` seconds later on `label_topic`;
    ``labelled[0]`` counts the events whose labels were sent."""
    from headrace.streams.base import OutRecord

    chunk = max(1, int(rate / 100))
    started = time.monotonic()
    due: deque[tuple[float, list[OutRecord], int]] = deque()

    def release(now: float) -> None:
        while due and due[0][0] <= now:
            _, records, through = due.popleft()
            if records:
                broker.append(label_topic, records)
            if labelled is not None:
                labelled[0] = through

    for begin in range(0, len(payloads), chunk):
        if stop.is_set():
            return
        part = payloads[begin : begin + chunk]
        broker.append(topic, [OutRecord(value=value, key=key) for key, value in part])
        if labels is not None:
            late = [OutRecord(value=v) for v in labels[begin : begin + len(part)] if v is not None]
            due.append((time.monotonic() + label_delay_s, late, begin + len(part)))
            release(time.monotonic())
        ahead = (begin + len(part)) / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    while due and not stop.is_set():  # the last labels, as they come due
        stop.wait(max(0.0, due[0][0] - time.monotonic()))
        release(time.monotonic())


def _serve_beside(registry: Registry, *, seed: int, say: Say) -> ServingBeside:
    """The HTTP server on an ephemeral port, asked a few OIP questions while the stream runs."""
    from headrace.demo.serving import serve_beside_stream

    serving = serve_beside_stream(registry, generate(200, seed=seed + 3))
    if serving.skipped:
        say(f"    no HTTP server beside the stream: {serving.skipped}")
    else:
        say(f"    the HTTP server answers OIP requests beside the stream at {serving.url}/v2")
    return serving


def _drift_report(
    registry: Registry, release: Any, stream: Transactions, *, drift_at: int, path: Path
) -> list[str]:
    """The HTML drift report of the release's reference against the drifted traffic (the
    last rows after the drift point, at most 5,000); returns the columns that moved."""
    import numpy as np

    from headrace.monitoring.drift import DriftReference, check_drift, render_html

    # At least 500 rows (before the drift point too, if it comes that late).
    after = slice(min(max(drift_at, len(stream) - 5000), max(len(stream) - 500, 0)), len(stream))
    current = {
        "amount": stream.amount[after],
        "merchant": np.array([MERCHANTS[i] for i in stream.merchant[after]], dtype=object),
        "distance_km": stream.distance_km[after],
        "card_present": stream.card_present[after].astype(np.int8),
        "tx_last_24h": stream.tx_last_24h[after],
    }
    reference = DriftReference.from_release(registry, release)
    report = check_drift(reference, current)
    path.write_text(
        render_html(
            report,
            reference,
            current,
            title=f"headrace demo: {release.ref} after the drift at event {drift_at:,}",
            current_name=f"events {after.start:,}-{after.stop - 1:,} (after the drift)",
        ),
        encoding="utf-8",
    )
    return list(report.drifted_columns)


def _labels(stream: Transactions, payloads: list[tuple[bytes, bytes, str | None]]) -> list[Any]:
    """The true label of each event that carries an id, as its feedback message."""
    return [
        None
        if kind == "missing_id"
        else orjson.dumps(
            {"event_id": f"tx-{i:08d}", "label": "fraud" if stream.is_fraud[i] else "legit"}
        )
        for i, (_, _, kind) in enumerate(payloads)
    ]


def run_demo(
    *,
    events: int = 120_000,
    home: Path | None = None,
    rate: float = 10_000.0,
    malformed_rate: float = 0.01,
    drift_share: float = 0.1,
    retrain_rows: int = 20_000,
    seed: int = 42,
    say: Say = print,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the demo end to end and return what happened.

    Parameters
    ----------
    events
        Transactions to stream. The rollout needs about 100,000 at the default rate: the
        retrain waits for the labels of `retrain_rows` events after the drift point, then
        the shadow and each canary step need their samples; with fewer the demo says
        what it did not reach.
    home
        Where the demo's registry, artifacts and outputs go (wiped first); a temporary
        directory when None.
    rate
        Events per second the producer offers (a live stream, not a backlog).
    drift_share
        Where the stream drifts, as a share of `events`.
    retrain_rows
        Labelled transactions after the drift point that release 2 is trained on.
    say, progress
        Where narration goes, and a callback ``(done, total)`` while streaming.
    """
    from headrace.pipeline.build import build_worker
    from headrace.registry.store import Registry
    from headrace.streams.memory import broker as named_broker

    home = home or Path(tempfile.mkdtemp(prefix="headrace-demo-"))
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    result = DemoResult(home=home)

    say("1/10 training a fraud model on 20,000 generated card transactions")
    first = train_first(home, rows=20_000, seed=seed)
    result.auc, result.threshold, result.validation = first.auc, first.threshold, first.validation
    v = result.validation
    say(
        f"    gradient-boosted trees, held-out AUC {result.auc:.3f}; fraud when P(fraud) >= "
        f"{result.threshold:.3f}, the best F1 on the validation rows (precision "
        f"{v['precision']:.2f}, recall {v['recall']:.2f}; at 0.5 recall would be "
        f"{v['recall_at_0.5']:.2f}), kept in the release config"
    )

    say("2/10 registering it as release fraud:1 (champion)")
    registry = Registry(
        f"sqlite:///{home / 'registry.db'}",
        artifacts=f"file://{home / 'artifacts'}",
        actor="headrace-demo",
        cache_dir=home / "cache",
    )
    with registry:
        release = register_trained(registry, first, alias="champion", reason="demo: first model")
        result.release, result.digest = release.ref, release.digest
        say(f"    {release.ref} digest {release.digest[:16]}..., inputs {', '.join(FEATURES)}")

        result.drift_at = drift_at = int(events * drift_share)
        result.drift_event = f"tx-{drift_at:08d}"
        say(
            f"3/10 streaming {events:,} transactions ({malformed_rate:.0%} malformed) through "
            f"the pipeline; from event {drift_at:,} on they drift (a new merchant mix, "
            "amounts x1.5); true labels follow later on a feedback topic"
        )
        # The same customers as the training data (its population seed), so only the
        # drift point changes what the model sees.
        stream = generate_drifting(
            events,
            drift_at=drift_at,
            seed=seed + 1,
            start_ts=1_790_700_000.0,
            population_seed=seed + 1,
        )
        sent = list(event_stream(stream, malformed_rate=malformed_rate, seed=seed + 2))
        payloads = [(key, value) for key, value, _ in sent]
        result.malformed_sent.update(kind for _, _, kind in sent if kind is not None)
        labels = _labels(stream, sent)
        result.labels_sent = sum(label is not None for label in labels)
        result.events = len(payloads)
        broker_name = f"demo-{id(result):x}"
        broker = named_broker(broker_name)
        # One partition: the order events are produced in is the order they are scored
        # in, so "the alarm came N events after the drift point" means what it says.
        broker.create_topic("transactions", partitions=1)
        broker.create_topic("labels", partitions=1)
        outputs = home / "outputs"
        spec = _pipeline_spec(broker_name, outputs)
        total = result.events

        done = threading.Event()
        streamed_at: list[float] = []
        scored = [0]
        labelled = [0]
        story = RolloutStory(
            registry,
            home=home,
            stream=stream,
            malformed=np.array([kind is not None for _, _, kind in sent], dtype=bool),
            drift_at=drift_at,
            retrain_rows=retrain_rows,
            history_fraud_rate=first.fraud_rate,
            scored=lambda: scored[0],
            labelled=lambda: labelled[0],
            say=say,
        )

        def report(stats: Any) -> None:
            scored[0] = stats.events
            if progress is not None:
                progress(stats.events, total)
            if stats.events < total:
                return
            # Every event scored: the story ends what still runs; keep the worker up
            # until it has, and until the feedback reader has read the labels sent so
            # far (at most 30 s), so a short demo reports accuracy too.
            story.stream_ended()
            streamed_at.append(time.monotonic())
            labels_read = broker.lag(f"{spec.name}-feedback", "labels") == 0
            settled = labels_read and not producer.is_alive() and not story.running
            if settled or time.monotonic() - streamed_at[0] > 30.0:
                done.set()

        worker = build_worker(spec, registry=registry, home=home, on_stats=report)
        monitors = worker.monitors
        watch = None if monitors is None else monitors.drift
        if watch is not None:
            result.drift_columns = list(watch.monitor.columns)
            result.drift_threshold = watch.monitor.threshold
            result.calibration_s = watch.calibration_s
            result.calibration_checks = watch.monitor.calibration.checks
            say(
                f"    drift monitor on {', '.join(result.drift_columns)}: windows of "
                f"{watch.monitor.window} rows every {watch.monitor.stride}, threshold "
                f"{watch.monitor.threshold:.2f} for one false alarm per 1,000,000 rows "
                f"(calibrated on {result.calibration_checks:,} simulated windows in "
                f"{result.calibration_s:.1f}s)"
            )

            def alarmed(record: dict[str, Any]) -> None:
                say(
                    f"    DRIFT ALARM at event {record['event_id']} (row {record['row']:,}): "
                    f"{', '.join(record['columns'])} moved ({alarm_evidence(record)}); "
                    f"audited, {release.ref} tagged drift"
                )
                story.alarm()

            watch.on_alarm = alarmed
        serving = _serve_beside(registry, seed=seed, say=say)
        stop = threading.Event()
        producer = threading.Thread(
            target=_produce,
            args=(broker, "transactions", payloads),
            kwargs={
                "rate": rate,
                "stop": stop,
                "labels": labels,
                "label_topic": "labels",
                # two seconds late: longer than the worker lags behind the producer (it
                # scores twice while it shadows), so a label finds its prediction
                # waiting (a fraud label takes days in life)
                "label_delay_s": 2.0,
                "labelled": labelled,
            },
            name="demo-producer",
            daemon=True,
        )
        story.start()
        producer.start()
        try:
            # the demo narrates each alarm and verdict itself, once
            with _quiet(_ALARM_LOGGER), _dropping(_ROLLOUT_LOGGER, _VERDICT_LOG):
                stats = worker.run(stop=done)
        finally:
            stop.set()
            story.stream_ended()
            producer.join(timeout=10)
            story.join(timeout=30)
        if progress is not None:
            progress(stats.events, total)
        result.stats = stats.summary()
        result.outputs_path = outputs / "fraud-scores.jsonl"
        result.dead_letters_path = outputs / "dead-letters.jsonl"
        result.serving = serving.finish()
        result.rollout = story.report
        if watch is not None:
            result.alarms = list(watch.alarms)
            result.drift_repeats = watch.repeats
        if monitors is not None and monitors.accuracy is not None:
            result.accuracy = _accuracy(monitors.accuracy, release.ref)
            result.accuracy_by_release = {
                ref: _accuracy(monitors.accuracy, ref) for ref in sorted(monitors.accuracy.report())
            }

        say("8/10 checking the outputs")
        _check_outputs(result)

        say("9/10 writing the report: drift (the reference against the traffic after the drift)")
        result.report_path = home / "drift-report.html"
        result.report_drifted = _drift_report(
            registry, release, stream, drift_at=drift_at, path=result.report_path
        )
        if result.rollout is not None and result.rollout.phases:
            from headrace.demo.report import add_rollout_section

            add_rollout_section(result.report_path, result.rollout)
        result.release_tags = registry.release_tags(release.ref)

        say("10/10 verifying the audit chain (registrations, alias moves, rollout verdicts)")
        result.audit_records = registry.verify_audit()
    return result


def _pipeline_spec(broker_name: str, outputs: Path) -> Any:
    """The demo's pipeline: the in-process stream, file sinks, late labels, a drift
    monitor, and rollouts followed (and judged) every quarter second."""
    from headrace.pipeline.spec import pipeline_spec_from_dict

    return pipeline_spec_from_dict(
        {
            "name": "fraud-scoring",
            "model": "fraud@champion",
            "source": {"url": f"memory://{broker_name}/transactions", "group": "fraud-scoring"},
            "outputs": [{"url": f"file://{outputs / 'fraud-scores.jsonl'}"}],
            "dead_letter": {"url": f"file://{outputs / 'dead-letters.jsonl'}"},
            "shadow": {"url": f"file://{outputs / 'shadow-scores.jsonl'}"},
            "id_field": "event_id",
            "batch": {"max_size": 512, "max_wait_ms": 5},
            "limits": {"max_event_bytes": 65_536},
            "stats_interval_s": 0.2,
            "feedback": {"url": f"memory://{broker_name}/labels", "window": 5000},
            # `hour` is left out: a live stream comes in time order, so a window of
            # consecutive events spans an hour or two of the day, never all of it.
            # 2,000 simulated windows calibrate in well under a second; a worker
            # (20,000 by default) caches its calibration under HEADRACE_HOME.
            "drift": {
                "window": 500,
                "stride": 250,
                "target_run_length": 1_000_000,
                "calibration_checks": 2000,
                "columns": ["amount", "distance_km", "card_present", "tx_last_24h"],
                "sink": {"url": f"file://{outputs / 'drift-alarms.jsonl'}"},
            },
            # A demo-sized poll: verdicts within a quarter second of their evidence.
            "rollout": {"poll_s": 0.25, "lease_ttl_s": 2.0},
        },
        where="demo pipeline",
    )


def _check_outputs(result: DemoResult) -> None:
    """Count the flagged outputs (keep three examples) and the outputs per release, and
    which release scored the last run of outputs (after a promotion: the new one)."""
    if result.outputs_path is None:
        return
    flagged = 0
    by_release: Counter[str] = Counter()
    last, run = "", 0
    with result.outputs_path.open("rb") as handle:
        for line in handle:
            record = orjson.loads(line)
            by_release[record["release"]] += 1
            run = run + 1 if record["release"] == last else 1
            last = record["release"]
            if record["prediction"] == "fraud":
                flagged += 1
                if len(result.examples) < 3:
                    result.examples.append(record)
    result.flagged = flagged
    result.outputs_by_release = dict(sorted(by_release.items()))
    result.last_outputs = (last, run)


_ALARM_LOGGER = "headrace.monitoring.drift.online"
_ROLLOUT_LOGGER = "headrace.rollout"
_VERDICT_LOG = "rollout of %s: %s (%s)"  # the participant's line for each decision


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Raise logger `name` to ERROR for the block (its warnings repeat the narration)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _dropping(name: str, message: str) -> Iterator[None]:
    """Drop logger `name`'s records of format `message` for the block (the rest pass)."""
    logger = logging.getLogger(name)

    def keep(record: logging.LogRecord) -> bool:
        return record.msg != message

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def alarm_evidence(record: dict[str, Any]) -> str:
    """An online drift alarm's statistic under its own name, and the p-values behind it.

    The alarm's number is the scaled KS distance sqrt(n*m/(n+m)) * D of a window of m rows
    against n reference rows, compared with a threshold calibrated for the false-alarm
    rate; it is not the KS D of the drift report (D is in [0, 1]).
    """
    moved = [c for c in record["columns"] if record.get("p_values", {}).get(c) is not None]
    p = ", ".join(f"{c} p = {format_p(record['p_values'][c])}" for c in moved)
    return f"scaled KS sqrt(nm/(n+m))*D = {record['statistic']:.2f} > {record['threshold']:.2f}" + (
        f"; KS {p}" if p else ""
    )


def format_p(p: float) -> str:
    """One p-value format everywhere the demo prints one: 3 significant digits, and
    ``< 1e-300`` where a float cannot tell it from 0."""
    return "< 1e-300" if p < 1e-300 else f"{p:.3g}"


def _accuracy(monitor: Any, release: str) -> dict[str, Any]:
    """The live accuracy of `release` over its joined labels, and the join's counts."""
    joins = monitor.stats()
    found = monitor.report().get(release)
    out: dict[str, Any] = {
        "joined": joins.joined,
        "pending": joins.pending,
        "unknown": joins.unknown,
    }
    for name in ("accuracy", "precision", "recall", "auc", "ece"):
        out[name] = None if found is None else getattr(found, name)
    out["window"] = 0 if found is None else found.joined
    return out
