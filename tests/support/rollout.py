"""Rollout plumbing for end-to-end tests: candidate releases of ``fraud`` beside the
champion `support.kafka.register_fraud_release` made, pipeline specs that take part in
rollouts, the ``rollout`` CLI, and the registry read while workers run.

The candidates are real releases, each different in one known way: retrained on another
sample (equal), a raised intercept (shifted scores), a Python model that raises on the rows
whose values hash into a fixed share (failing), one that sleeps in every call (slow), and
one whose schema requires a field the stream lacks (incompatible). Which rows the failing
one refuses is a pure function of the event (`fails`), so a test predicts every dead
letter it must find.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from support.cli import clean_env, run_headrace
from support.models import local_registry

NAME = "fraud"
"""The release name every candidate shares with the champion."""

FAIL_PERCENT = 20
"""Share (percent) of live rows the failing candidate raises on."""


@dataclass(frozen=True)
class Candidate:
    """A registered candidate: ``fraud:VERSION`` and its digest."""

    version: int
    ref: str
    digest: str


KEY_FIELDS = ("amount", "hour", "distance_km", "tx_last_24h")
"""The event fields whose values decide whether the failing candidate raises on a row."""


def fails(event: Mapping[str, Any], *, seen: set[tuple[float, ...]]) -> bool:
    """Whether the failing candidate raises on this event (the model file computes the
    same from its matrix): CRC-32 of the `KEY_FIELDS` values as float64 bytes, below
    `FAIL_PERCENT` of 100, unless the row is one of the training rows `seen`
    (`training_rows`). A candidate failing its reference sample (drawn from the training
    data) is refused before any traffic, which is not what these tests need; live rows
    are practically never training rows, which the test checks."""
    row = tuple(float(event[name]) for name in KEY_FIELDS)
    return zlib.crc32(struct.pack("<4d", *row)) % 100 < FAIL_PERCENT and row not in seen


def training_rows(home: Path) -> set[tuple[float, ...]]:
    """The `KEY_FIELDS` values of each row of the champion's training data."""
    import pyarrow.parquet as pq

    table = pq.read_table(_inputs(home) / "train.parquet", columns=list(KEY_FIELDS))
    columns = [table.column(name).to_numpy().astype(np.float64).tolist() for name in KEY_FIELDS]
    return set(zip(*columns, strict=True))


def _inputs(home: Path) -> Path:
    """The release inputs `register_fraud_release` wrote (schema, features, data, ...)."""
    files = home.parent / "release-inputs"
    if not (files / "schema.yaml").is_file():
        raise FileNotFoundError(
            f"no release inputs under {files}: call register_fraud_release(home) first"
        )
    return files


def _register(
    home: Path,
    model_path: Path,
    *,
    flavor: str,
    label: str,
    schema: Path,
    entry: str | None = None,
) -> Candidate:
    from headrace.release.bundle import build_draft

    files = _inputs(home)
    scratch = home.parent / f"scratch-{label}"
    scratch.mkdir(parents=True, exist_ok=True)
    draft = build_draft(
        model_path,
        name=NAME,
        flavor=flavor,
        workdir=scratch,
        schema_path=schema,
        features_path=files / "features.yaml",
        data_path=files / "train.parquet",
        metrics_path=files / "metrics.json",
        config_path=files / "config.yaml",
        code_version=f"test-{label}",
        entry=entry,
    )
    with local_registry(home, actor="e2e") as registry:
        release = registry.register(draft)
    return Candidate(version=release.version, ref=release.ref, digest=release.digest)


def _train(*, rows: int, seed: int, intercept_shift: float = 0.0) -> Any:
    """The champion's pipeline (scaler + logistic regression) on another sample."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from headrace.demo.data import generate, training_matrix

    data = generate(rows, seed=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(training_matrix(data), data.is_fraud.astype(int))
    model[-1].intercept_ = model[-1].intercept_ + intercept_shift
    return model


def register_sklearn_candidate(
    home: Path, *, label: str, seed: int, rows: int = 5_000, intercept_shift: float = 0.0
) -> Candidate:
    """The champion's pipeline retrained on `rows` events of `seed`, its logistic
    regression's intercept raised by `intercept_shift` (0: an equal candidate)."""
    import joblib

    directory = home.parent / f"candidate-{label}"
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(
        _train(rows=rows, seed=seed, intercept_shift=intercept_shift), directory / "model.pkl"
    )
    return _register(
        home,
        directory / "model.pkl",
        flavor="sklearn",
        label=label,
        schema=_inputs(home) / "schema.yaml",
    )


_PYTHON_MODEL = """
import struct
import time
import zlib
from pathlib import Path

import joblib
import numpy as np

FAIL_PERCENT = {fail_percent}
SLEEP_S = {sleep_s!r}


class Model:
    \"\"\"The champion's arithmetic (its pickled pipeline), raising on the rows whose values
    hash into FAIL_PERCENT percent (unless it is a training row) and sleeping SLEEP_S
    seconds in every call.\"\"\"

    def __init__(self):
        here = Path(__file__).parent
        self._inner = joblib.load(here / "inner.pkl")
        self._seen = set(map(tuple, np.load(here / "seen.npy").tolist()))
        self.classes_ = self._inner.classes_

    def _check(self, matrix):
        values = np.asarray(matrix, dtype=np.float64)
        if FAIL_PERCENT:
            # amount, hour, distance_km, tx_last_24h: the release's input order.
            keys = values[:, [0, 1, 3, 5]].tolist()
            bad = [
                row
                for row in keys
                if zlib.crc32(struct.pack("<4d", *row)) % 100 < FAIL_PERCENT
                and tuple(row) not in self._seen
            ]
            if bad:
                raise ValueError(f"refusing {{len(bad)}} of {{len(values)}} rows")
        if SLEEP_S:
            time.sleep(SLEEP_S)
        return values

    def predict_proba(self, matrix):
        return self._inner.predict_proba(self._check(matrix))

    def predict(self, matrix):
        return self._inner.predict(self._check(matrix))
"""


def register_python_candidate(
    home: Path, *, label: str, fail_percent: int = 0, sleep_s: float = 0.0
) -> Candidate:
    """A ``python``-flavor release wrapping the champion's own pickled pipeline (same
    schema and features), failing the rows `fails` names when `fail_percent` is
    `FAIL_PERCENT`, sleeping `sleep_s` in every model call."""
    if fail_percent not in (0, FAIL_PERCENT):
        raise ValueError(f"fail_percent is 0 or {FAIL_PERCENT} (what `fails` predicts)")
    files = _inputs(home)
    directory = home.parent / f"candidate-{label}"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files / "model.pkl", directory / "inner.pkl")
    np.save(directory / "seen.npy", np.asarray(sorted(training_rows(home)), dtype=np.float64))
    (directory / "model.py").write_text(
        _PYTHON_MODEL.format(fail_percent=fail_percent, sleep_s=sleep_s)
    )
    return _register(
        home,
        directory,
        entry="model.py:Model",
        flavor="python",
        label=label,
        schema=files / "schema.yaml",
    )


def register_incompatible_candidate(home: Path, *, label: str) -> Candidate:
    """The champion's model under a schema that also requires ``device_id``, a field the
    live stream (the champion's schema) does not carry: a rollout must refuse it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = _inputs(home)
    directory = home.parent / f"candidate-{label}"
    directory.mkdir(parents=True, exist_ok=True)
    schema = yaml.safe_load((files / "schema.yaml").read_text())
    schema["fields"].append({"name": "device_id", "type": "string"})
    (directory / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    table = pq.read_table(files / "train.parquet")
    devices = pa.array([f"device-{i % 97}" for i in range(table.num_rows)])
    pq.write_table(table.append_column("device_id", devices), directory / "train.parquet")
    shutil.copyfile(files / "model.pkl", directory / "model.pkl")
    from headrace.release.bundle import build_draft

    scratch = home.parent / f"scratch-{label}"
    scratch.mkdir(parents=True, exist_ok=True)
    draft = build_draft(
        directory / "model.pkl",
        name=NAME,
        flavor="sklearn",
        workdir=scratch,
        schema_path=directory / "schema.yaml",
        features_path=files / "features.yaml",
        data_path=directory / "train.parquet",
        metrics_path=files / "metrics.json",
        config_path=files / "config.yaml",
        code_version=f"test-{label}",
    )
    with local_registry(home, actor="e2e") as registry:
        release = registry.register(draft)
    return Candidate(version=release.version, ref=release.ref, digest=release.digest)


# --- pipelines and the CLI ------------------------------------------------------------


def with_rollout(
    spec: Path,
    *,
    poll_s: float = 0.2,
    lease_ttl_s: float = 2.0,
    shadow: tuple[str, str] | None = None,
) -> Path:
    """Add a ``rollout`` section (fast polls, a short lease, latency timed in every batch
    so a slow candidate is caught within the test's events) and, given ``(bootstrap,
    topic)``, a Kafka ``shadow`` sink to a spec `support.kafka.write_pipeline` wrote."""
    document = yaml.safe_load(spec.read_text())
    document["rollout"] = {
        "follow": True,
        "poll_s": poll_s,
        "lease_ttl_s": lease_ttl_s,
        "time_every": 1,
    }
    if shadow is not None:
        document["shadow"] = {"url": f"kafka://{shadow[0]}", "topic": shadow[1]}
    spec.write_text(yaml.safe_dump(document, sort_keys=False))
    return spec


def rollout_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``headrace rollout *args`` against `home`'s registry (never raises on exit)."""
    return run_headrace("rollout", *args, env=clean_env(home))


def start_rollout(home: Path, version: int, *args: str) -> None:
    """``headrace rollout start fraud --candidate VERSION *args``; fail unless it exits 0."""
    done = rollout_cli(home, "start", NAME, "--candidate", str(version), *args)
    if done.returncode != 0:
        raise AssertionError(f"rollout start exited {done.returncode}: {done.stderr}")


def start_capped_rollout(
    home: Path,
    version: int,
    *,
    strategy: str,
    steps: Sequence[float],
    min_samples: int,
    max_samples: int,
) -> None:
    """Start a rollout as ``rollout start`` does (`plan_rollout`, then
    `Registry.start_rollout`), with `max_samples` per arm instead of the CLI's fixed floor
    of 50,000: where a step that showed no harm advances, or the last one promotes."""
    import msgspec

    from headrace.rollout.compat import plan_rollout

    with local_registry(home, actor="e2e") as registry:
        plan = plan_rollout(
            registry, NAME, version, strategy=strategy, steps=steps, min_samples=min_samples
        )
        registry.start_rollout(msgspec.structs.replace(plan, max_samples=max_samples))


def rollout_status(home: Path) -> dict[str, Any]:
    """``headrace rollout status fraud --json``, parsed."""
    done = rollout_cli(home, "status", NAME, "--json")
    if done.returncode != 0:
        raise AssertionError(f"rollout status exited {done.returncode}: {done.stderr}")
    document: dict[str, Any] = orjson.loads(done.stdout)
    return document


def rollout_state(home: Path) -> Any:
    """The newest rollout of ``fraud`` read from the registry (cheap enough to poll)."""
    with local_registry(home, actor="e2e") as registry:
        return registry.rollout(NAME)


def wait_rollout_end(home: Path, *, timeout: float, alive: Any = None, poll_s: float = 0.2) -> Any:
    """Poll the registry until the rollout is no longer running; return its state. Fail
    after `timeout` seconds or when `alive()` raises (a worker died)."""
    deadline = time.monotonic() + timeout
    while True:
        state = rollout_state(home)
        if state is not None and state.state != "running":
            return state
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            where = "no rollout" if state is None else f"step {state.step}, {state.reason!r}"
            raise AssertionError(f"rollout still running after {timeout:.0f}s ({where})")
        time.sleep(poll_s)


def reset_champion(home: Path, version: int = 1) -> None:
    """End any running rollout of ``fraud`` and point ``champion`` at `version`, so each
    test starts from the champion `register_fraud_release` made."""
    with local_registry(home, actor="e2e") as registry:
        state = registry.rollout(NAME)
        if state is not None and state.running:
            registry.abort_rollout(NAME, reason="test cleanup")
        if registry.aliases(NAME).get("champion") != version:
            registry.set_alias(NAME, "champion", version)


# --- feeding a topic and watching workers switch --------------------------------------


class Feeder:
    """Produces events at a steady rate from a thread until stopped (or out of events),
    so a rollout always has traffic; `produced` says how many left so far, in order."""

    def __init__(self, producer: Any, items: Sequence[tuple[bytes, bytes]], *, rate: float):
        self._producer = producer  # a support.kafka.Producer
        self._items = items
        self._rate = rate
        self._lock = threading.Lock()
        self._produced = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="e2e-feeder", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    @property
    def produced(self) -> int:
        """Events handed to the producer so far (the first `produced` of the items)."""
        with self._lock:
            return self._produced

    def _run(self) -> None:
        from support.kafka import produce

        client = self._producer._producer
        topic = self._producer.topic
        chunk = max(1, int(self._rate / 50))
        due = time.monotonic()
        try:
            for begin in range(0, len(self._items), chunk):
                if self._stop.is_set():
                    break
                part = self._items[begin : begin + chunk]
                for key, value in part:
                    produce(client, topic, key, value)
                with self._lock:
                    self._produced += len(part)
                client.poll(0)
                due += len(part) / self._rate
                ahead = due - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
                elif ahead < -1.0:  # fell behind (a loaded machine): no burst to catch up
                    due = time.monotonic()
        except BaseException as exc:  # reported by stop
            self._error = exc

    def wait_for(self, count: int, *, timeout: float = 120.0) -> None:
        """Block until `count` events were handed to the producer."""
        deadline = time.monotonic() + timeout
        while self.produced < count:
            if not self._thread.is_alive():
                raise AssertionError(f"feeder stopped at {self.produced} of {count} events")
            if time.monotonic() > deadline:
                raise AssertionError(f"feeder at {self.produced} of {count} after {timeout}s")
            time.sleep(0.02)

    def stop(self) -> int:
        """Stop producing, wait until the broker acknowledged everything produced, and
        return how many events that is."""
        self._stop.set()
        self._thread.join(30)
        if self._error is not None:
            raise self._error
        remaining = self._producer._producer.flush(60)
        if remaining or self._producer.failures:
            raise AssertionError(
                f"feeding {self._producer.topic}: {remaining} unacknowledged, "
                f"failures {self._producer.failures[:3]}"
            )
        return self.produced


def rollout_gauges(metrics_url: str) -> tuple[float, float]:
    """A worker's routing as its metrics say: the candidate's weight
    (``headrace_pipeline_rollout_weight_percent``, 0 outside a rollout) and the events it
    routed to a candidate so far (``headrace_pipeline_rollout_events_total``)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:  # noqa: S310 (test URL)
        text = response.read().decode()
    weight = candidate = 0.0
    for line in text.splitlines():
        if line.startswith("headrace_pipeline_rollout_weight_percent{"):
            weight = float(line.rsplit(" ", 1)[1])
        elif line.startswith("headrace_pipeline_rollout_events_total{") and (
            'arm="candidate"' in line
        ):
            candidate += float(line.rsplit(" ", 1)[1])
    return weight, candidate


class WeightWatcher:
    """Scrapes a worker's routing every `every` seconds from a thread and keeps each
    change with the wall-clock time it was first seen, to tell when the worker took part
    in a rollout and when it left it (weight 0 again after routing events to a
    candidate: the counter keeps a rollout shorter than a scrape from being missed)."""

    def __init__(
        self, metrics_url: str, *, running: Callable[[], bool], every: float = 0.05
    ) -> None:
        """Watch `metrics_url` while `running()` (the worker process) says so."""
        self.url = metrics_url
        self._running = running
        self.changes: list[tuple[float, float, float]] = []  # (time.time(), weight, events)
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-weight", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last: tuple[float, float] | None = None
        while not self._stop.is_set() and self._running():
            try:
                seen = rollout_gauges(self.url)
            except OSError:
                seen = None  # not listening yet, or gone
            if seen is not None and seen != last:
                self.changes.append((time.time(), *seen))
                last = seen
            self._stop.wait(self._every)

    def joined(self) -> bool:
        """Whether the worker was seen routing to a candidate."""
        return any(weight > 0 or events > 0 for _, weight, events in list(self.changes))

    def left_rollout_at(self) -> float | None:
        """When the weight was first seen at 0 after the worker routed to a candidate."""
        joined = False
        for at, weight, events in list(self.changes):
            if weight > 0:
                joined = True
            elif joined or events > 0:
                return at
        return None

    def wait_left(self, *, timeout: float, alive: Any = None) -> float:
        """Block until the worker left the rollout (`left_rollout_at`); return when."""
        deadline = time.monotonic() + timeout
        while (at := self.left_rollout_at()) is None:
            if alive is not None:
                alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.url}: still in the rollout after {timeout:.0f}s ({self.changes})"
                )
            time.sleep(0.02)
        return at

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
