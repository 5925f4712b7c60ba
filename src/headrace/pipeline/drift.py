"""Drift in the running pipeline: the worker's batches through an `OnlineDriftMonitor`.

`DriftWatch.on_batch` hands the monitor the scored rows' feature columns and scores, one
vectorised update per batch (a few microseconds plus, every `stride` rows, one KS check).
An alarm is acted on where it fires: a JSON record to the alarm sink (acknowledged), the
audit log (`record_drift_alarm`), the drift metrics, a WARNING line and a ``drift`` tag on
the release. Each action that fails is logged and skipped: a monitoring outage must not
stop the scoring.

The threshold's calibration simulates thousands of windows (seconds), so
`build_drift_watch` runs it before the worker consumes anything and caches it per
release digest and settings under ``<home>/drift-calibration``: a restart reads it back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from headrace.errors import ConfigError, HeadraceError
from headrace.monitoring.drift.calibration import Calibration
from headrace.monitoring.drift.ks import ks_pvalues
from headrace.monitoring.drift.online import DriftAlarm, OnlineDriftMonitor, record_drift_alarm
from headrace.monitoring.drift.reference import DriftReference
from headrace.pipeline.spec import DriftSpec
from headrace.streams.base import OutRecord, Sink

if TYPE_CHECKING:
    from headrace.inference.service import InferenceService
    from headrace.monitoring.metrics import DriftMetrics
    from headrace.pipeline.outcome import BatchOutcome
    from headrace.registry.store import Registry

__all__ = [
    "CALIBRATION_DIR",
    "DRIFT_TAG",
    "DriftWatch",
    "build_drift_watch",
    "calibration_path",
]

log = logging.getLogger("headrace.pipeline")

CALIBRATION_DIR = "drift-calibration"
"""The directory under the home where calibrated thresholds are cached."""
DRIFT_TAG = "drift"
"""The release tag a drift alarm sets (``alarm at <time>: <columns> (event <id>)``)."""

FloatArray = npt.NDArray[np.float64]


@dataclass
class DriftWatch:
    """The worker's drift monitor and what it does with an alarm.

    Parameters
    ----------
    monitor
        The online monitor (calibrated) for the worker's release.
    pipeline
        For records and log lines.
    registry
        Where alarms are audited and the release tagged.
    sink
        Where alarm records go (opened by `open`), or None.
    metrics
        Drift p-values and alarm counters, or None.
    flush_timeout_s
        How long an alarm record may wait for the sink's acknowledgement.
    on_alarm
        Called with each alarm's record (as sent to the sink) once it was acted on.
    calibration_s
        How long calibrating took at start-up (0 when read from the cache).
    clear_after_checks
        A drift *episode* opens with an alarm and closes after this many clean checks in
        a row. Only the alarm that opens an episode is sent, audited and tagged: a drift
        that lasts is detected again at every fresh window, and acting on each would fill
        the audit log (at 50,000 events/s, 100 records a second); the metrics count
        every detection (`repeats` here).
    """

    monitor: OnlineDriftMonitor
    pipeline: str
    registry: Registry
    sink: Sink | None = None
    metrics: DriftMetrics | None = None
    flush_timeout_s: float = 10.0
    on_alarm: Callable[[dict[str, Any]], None] | None = None
    calibration_s: float = 0.0
    clear_after_checks: int = 3
    alarms: list[dict[str, Any]] = field(default_factory=list)
    repeats: int = 0
    cleared: int = 0
    failures: int = 0
    skipped_rows: int = 0
    _sizes: npt.NDArray[np.int64] = field(init=False, repr=False)
    _warned_release: str | None = field(default=None, init=False, repr=False)
    _episode_open: bool = field(default=False, init=False, repr=False)
    _clean_checks: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        reference = self.monitor.reference
        index = [reference.position(n) for n in self.monitor.columns]
        self._sizes = reference.sorted.sizes[index]

    @property
    def release(self) -> str:
        """The release watched (``name:version``)."""
        return self.monitor.release or ""

    def open(self) -> None:
        """Open the alarm sink."""
        if self.sink is not None:
            self.sink.open()

    def close(self) -> None:
        """Close the alarm sink."""
        if self.sink is not None:
            self.sink.close()

    def on_settle(self, start_ns: int) -> None:
        """Nothing to do: the windows move per batch (an `Observer` hook)."""

    def on_batch(self, outcome: BatchOutcome) -> list[DriftAlarm]:
        """Feed the batch's scored rows; act on (and return) the alarms they raise."""
        result = outcome.result
        if not outcome.scored:
            return []
        if result.release != self.release:
            # Another release (a rollout's candidate, or the release the worker just
            # switched to, whose own watch is being built) has its own reference: tested
            # against this one it would cry wolf.
            self.skipped_rows += len(outcome.scored)
            if self._warned_release != result.release:
                self._warned_release = result.release
                log.info(
                    "%s: drift watches %s; rows scored by %s are not tested against it",
                    self.pipeline,
                    self.release,
                    result.release,
                )
            return []
        monitor = self.monitor
        matrix = _feature_matrix(outcome, monitor.columns)
        before_rows, before_checks = monitor.rows, monitor.checks
        alarms = monitor.update(matrix, result.scores)
        if self.metrics is not None and monitor.checks != before_checks:
            self._observe_p_values()
        for alarm in alarms:
            event_id = outcome.scored_ids[alarm.row - before_rows - 1]
            if self._episode_open:
                self.repeats += 1
                if self.metrics is not None:
                    self.metrics.observe_alarm(self.release, alarm.columns)
                log.debug("%s: still drifting at event %s", self.pipeline, event_id)
            else:
                self._episode_open = True
                self._act(alarm, event_id=event_id)
        self._count_clean(monitor.checks - before_checks, alarmed=bool(alarms))
        return alarms

    def _count_clean(self, checks: int, *, alarmed: bool) -> None:
        """Close the open episode after `clear_after_checks` clean checks in a row."""
        if alarmed:
            self._clean_checks = 0
            return
        self._clean_checks += checks
        if self._episode_open and self._clean_checks >= self.clear_after_checks:
            self._episode_open = False
            self.cleared += 1
            log.info(
                "%s: drift on %s cleared: %d clean checks in a row (%d repeated detections "
                "during the episode)",
                self.pipeline,
                self.release,
                self._clean_checks,
                self.repeats,
            )

    def _observe_p_values(self) -> None:
        stats, counts = self.monitor.last_statistics, self.monitor.last_counts
        if self.metrics is None or stats is None or counts is None:
            return
        p_values = ks_pvalues(stats, self._sizes, counts, method="asymp")
        self.metrics.observe_p_values(
            self.release,
            {n: float(p) for n, p in zip(self.monitor.columns, p_values.tolist(), strict=True)},
        )

    def _act(self, alarm: DriftAlarm, *, event_id: str) -> None:
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        record = {
            **alarm.to_dict(),
            "pipeline": self.pipeline,
            "event_id": event_id,
            "at": at,
        }
        self.alarms.append(record)
        if self.metrics is not None:
            self.metrics.observe_alarm(self.release, alarm.columns)
        subject = self.release or alarm.reference
        tag = f"alarm at {at}: {', '.join(alarm.columns)} (event {event_id})"
        actions = [
            ("sink", self._send),
            ("audit log", lambda _: record_drift_alarm(self.registry, alarm, subject=subject)),
            ("release tag", lambda _: self.registry.tag_release(subject, DRIFT_TAG, tag)),
        ]
        for what, action in actions:
            try:
                action(record)
            except HeadraceError as exc:
                self.failures += 1
                log.error(
                    "%s: drift alarm at event %s could not reach the %s: %s",
                    self.pipeline,
                    event_id,
                    what,
                    exc,
                )
        log.info(
            "%s: drift alarm at event %s (row %d of %s): %s",
            self.pipeline,
            event_id,
            alarm.row,
            subject,
            ", ".join(alarm.columns),
        )
        if self.on_alarm is not None:
            self.on_alarm(record)

    def _send(self, record: Mapping[str, Any]) -> None:
        if self.sink is None:
            return
        self.sink.send([OutRecord(value=orjson.dumps(record), key=self.release.encode() or None)])
        self.sink.flush(timeout=self.flush_timeout_s)


def _as_float(values: Any) -> FloatArray:
    """A column as float64, None (a nullable field's missing value) as NaN."""
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return array.astype(np.float64, copy=False)
    return np.array([np.nan if v is None else v for v in array.tolist()], dtype=np.float64)


def _feature_matrix(view: BatchOutcome, columns: Sequence[str]) -> FloatArray:
    """``(scored rows, columns)``: the validated values of the monitored columns."""
    if view.records:  # the per-event path: decoded dicts
        records = [view.records[row] for row in view.scored]
        return np.column_stack([_as_float([r.get(n) for r in records]) for n in columns])
    if view.columns is None:
        raise ConfigError("The worker passed a batch with neither records nor columns.")
    messages = np.asarray(view.candidates, dtype=np.intp)[np.asarray(view.scored, dtype=np.intp)]
    return np.column_stack([_as_float(view.columns[n][messages]) for n in columns])


# -- building ---------------------------------------------------------------------------


def calibration_path(home: Path, *, digest: str, columns: Sequence[str], drift: DriftSpec) -> Path:
    """Where the calibration for a release digest, columns and settings is cached."""
    key = orjson.dumps(
        {
            "digest": digest,
            "columns": list(columns),
            "window": drift.window,
            "stride": drift.stride,
            "target_run_length": drift.target_run_length,
            "calibration_checks": drift.calibration_checks,
            "seed": drift.seed,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return home / CALIBRATION_DIR / f"{digest[:16]}-{hashlib.sha256(key).hexdigest()[:16]}.json"


def _read_calibration(path: Path, drift: DriftSpec) -> Calibration | None:
    """The cached calibration, or None (absent, unreadable or for other settings)."""
    try:
        data = orjson.loads(path.read_bytes())
        calibration = Calibration(**data)
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, TypeError) as exc:
        log.warning("ignoring the cached drift calibration %s (%s); calibrating again", path, exc)
        return None
    if (calibration.window, calibration.stride, calibration.target_run_length) != (
        drift.window,
        drift.stride,
        drift.target_run_length,
    ):
        return None
    return calibration


def _write_calibration(path: Path, calibration: Calibration) -> None:
    """Atomically, so a worker starting beside this one reads all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".calibration-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(asdict(calibration)))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _monitored_columns(
    drift: DriftSpec, reference: DriftReference, service: InferenceService
) -> list[str]:
    numeric = set(reference.numeric_names)
    if drift.columns is None:
        columns = [n for n in service.inputs if n in numeric]
        if not columns:
            raise ConfigError(
                f"drift: release {service.release} has no numeric input with a reference "
                f"sample (inputs {service.inputs}); name columns under `$.drift.columns` or "
                "register the release with --data."
            )
        return columns
    fields = set(service.schema.names)
    bad = [n for n in drift.columns if n not in numeric or n not in fields]
    if bad:
        candidates = sorted(numeric & fields)
        raise ConfigError(
            f"drift: columns {bad} are not numeric fields of release {service.release} with "
            f"a reference sample - at `$.drift.columns`; choose among {candidates}."
        )
    return list(drift.columns)


def build_drift_watch(
    drift: DriftSpec,
    *,
    pipeline: str,
    service: InferenceService,
    registry: Registry,
    home: Path,
    metrics: DriftMetrics | None = None,
) -> DriftWatch:
    """The calibrated monitor for the service's release, and its alarm sink (not opened).

    Calibration (seconds) happens here, before the worker consumes, or is read back from
    the cache; either way a log line says which and how long it took.
    """
    from headrace.streams.urls import open_sink

    release = registry.get(service.release)
    if release.digest != service.release_digest:
        raise ConfigError(
            f"drift: release {service.release} in the registry has digest "
            f"{release.digest[:16]}…, the loaded one {service.release_digest[:16]}…; "
            "restart the worker."
        )
    reference = DriftReference.from_release(registry, release)
    columns = _monitored_columns(drift, reference, service)
    path = calibration_path(home, digest=release.digest, columns=columns, drift=drift)
    calibration = _read_calibration(path, drift)
    started = time.perf_counter()
    if calibration is None:
        log.info(
            "%s: calibrating the drift threshold of %s for one false alarm per %d rows "
            "(window %d, stride %d, %d columns; up to %d simulated windows)...",
            pipeline,
            release.ref,
            drift.target_run_length,
            drift.window,
            drift.stride,
            len(columns),
            drift.calibration_checks,
        )
    monitor = OnlineDriftMonitor(
        reference,
        columns=columns,
        window=drift.window,
        stride=drift.stride,
        target_run_length=drift.target_run_length,
        calibration=calibration,
        calibration_checks=drift.calibration_checks,
        release=release.ref,
        seed=drift.seed,
    )
    seconds = time.perf_counter() - started
    if calibration is None:
        _write_calibration(path, monitor.calibration)
        log.info(
            "%s: drift threshold %.3f from %d simulated windows in %.1f s%s; cached in %s",
            pipeline,
            monitor.threshold,
            monitor.calibration.checks,
            seconds,
            " (tail extrapolated)" if monitor.calibration.extrapolated else "",
            path,
        )
    else:
        log.info(
            "%s: drift threshold %.3f read from the calibration cache %s",
            pipeline,
            monitor.threshold,
            path,
        )
    sink = (
        None
        if drift.sink is None
        else open_sink(drift.sink.url, topic=drift.sink.topic, options=dict(drift.sink.options))
    )
    return DriftWatch(
        monitor=monitor,
        pipeline=pipeline,
        registry=registry,
        sink=sink,
        metrics=metrics,
        calibration_s=seconds if calibration is None else 0.0,
        clear_after_checks=drift.clear_after_checks,
    )
