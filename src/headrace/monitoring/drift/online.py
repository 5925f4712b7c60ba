"""Drift on a live stream: sliding windows, a calibrated threshold, an alarm callback.

The stream worker hands `OnlineDriftMonitor.update` each micro-batch as numpy columns
(and the model's scores). The monitor keeps the last `window` rows in a ring buffer and,
every `stride` rows, tests them against the reference with one vectorised KS pass; the
alarm fires when the largest scaled KS distance over columns passes a threshold
calibrated for a target number of rows between false alarms (`calibrate_threshold`).
After an alarm the window starts afresh, so one drift raises one alarm per window, not
one per check.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from headrace.errors import DriftError
from headrace.monitoring.drift.calibration import Calibration, calibrate_threshold, scaled_ks
from headrace.monitoring.drift.check import window_bin_counts
from headrace.monitoring.drift.distances import jensen_shannon
from headrace.monitoring.drift.ks import SortedColumns, ks_pvalues, ks_statistics
from headrace.monitoring.drift.reference import DriftReference

if TYPE_CHECKING:
    from headrace.audit.chain import AuditRecord
    from headrace.registry.store import Registry

__all__ = [
    "DRIFT_ALARM_ACTION",
    "DriftAlarm",
    "OnlineDriftMonitor",
    "record_drift_alarm",
]

DRIFT_ALARM_ACTION = "drift.alarm"
"""The audit action of a drift alarm."""

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class DriftAlarm:
    """One alarm: when it fired, how far past the threshold, and which columns moved.

    `columns` are the columns whose own scaled KS distance passed the threshold (at
    least the one that fired); `p_values` are every column's asymptotic KS p-value on
    the alarming window, for the people who read the alarm.
    """

    row: int
    statistic: float
    threshold: float
    columns: tuple[str, ...]
    p_values: dict[str, float]
    js_distance: float | None
    window: int
    reference: str
    release: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (NaN as None) for sinks and the audit log."""
        data = asdict(self)
        data["p_values"] = {
            k: (None if not math.isfinite(v) else v) for k, v in self.p_values.items()
        }
        data["columns"] = list(self.columns)
        return data


class OnlineDriftMonitor:
    """Sliding-window KS drift detection with a controlled false-alarm rate.

    Parameters
    ----------
    reference
        The reference; its numeric columns are monitored (`columns` picks some;
        categorical columns are for `check_drift`, which reads counts, not ranks).
    window
        Rows per tested window.
    stride
        Rows between two tests. Smaller detects sooner and costs more: a check of 20
        columns over 1,000 rows takes ~1.5 ms, so ~3 us per row at the default.
    target_run_length
        Expected rows between two false alarms when nothing drifts (ARL0).
    on_alarm
        Called with each `DriftAlarm`, in the caller's thread, from `update`.
    calibration
        A `Calibration` kept from an earlier run with the same reference and settings,
        to skip the simulation: ``30 * (target_run_length - window) / stride`` simulated
        checks of ~1 ms each for 20 columns (6,000 checks, 6 to 11 s, at the defaults).
    calibration_checks
        The most checks the calibration may simulate before it extrapolates.
    release
        The release being monitored, carried into alarms.
    """

    def __init__(
        self,
        reference: DriftReference,
        *,
        columns: Sequence[str] | None = None,
        window: int = 1000,
        stride: int = 500,
        target_run_length: int = 100_000,
        on_alarm: Callable[[DriftAlarm], None] | None = None,
        calibration: Calibration | None = None,
        calibration_checks: int = 20_000,
        release: str | None = None,
        seed: int = 0,
    ) -> None:
        names = tuple(columns) if columns is not None else reference.numeric_names
        unknown = [n for n in names if reference.kind(n) != "numeric"]
        if unknown or not names:
            raise DriftError(
                f"Online drift monitors numeric reference columns; {unknown or 'none'} "
                f"are not among {list(reference.numeric_names)}."
            )
        if window < 2 or stride < 1:
            raise DriftError(f"window must be >= 2 and stride >= 1, got {window} and {stride}.")
        self.reference = reference
        # An alarm's p-values need scipy.special and, at times, scipy.stats, whose first
        # import takes about a second: pay it here, not in the hot path at the first alarm.
        import scipy.special
        import scipy.stats  # noqa: F401

        self.columns = names
        self.window = window
        self.stride = stride
        self.on_alarm = on_alarm
        self.release = release
        index = [reference.position(n) for n in names]
        self._sorted = SortedColumns([reference.sorted.views[i] for i in index])
        if calibration is None:
            if reference.sample is None:
                raise DriftError(
                    f"The reference ({reference.source}) keeps no sample rows to calibrate "
                    "the alarm threshold with; pass calibration=... or build it with one."
                )
            calibration = calibrate_threshold(
                reference.sample[:, index],
                self._sorted.sizes,
                window=window,
                stride=stride,
                target_run_length=target_run_length,
                checks=min(4000, calibration_checks),
                max_checks=calibration_checks,
                seed=seed,
            )
        elif (calibration.window, calibration.stride) != (window, stride):
            raise DriftError(
                f"The calibration is for window={calibration.window}, "
                f"stride={calibration.stride}, not window={window}, stride={stride}."
            )
        self.calibration = calibration
        self._buffer = np.full((window, len(names)), np.nan)
        self._scores = np.full(window, np.nan)
        self._filled = 0  # rows in the buffer since the last reset (capped at window)
        self._head = 0  # next slot to write
        self._since_check = 0
        self.rows = 0
        self.checks = 0
        self.alarms = 0
        # The last check's KS distances and window counts per column (for p-value gauges).
        self.last_statistics: FloatArray | None = None
        self.last_counts: npt.NDArray[np.int64] | None = None

    @property
    def threshold(self) -> float:
        """The calibrated threshold on the largest scaled KS distance."""
        return self.calibration.threshold

    def reset(self) -> None:
        """Forget the window (after an alarm, or when the release changes)."""
        self._filled = 0
        self._since_check = 0

    def update(
        self,
        features: Mapping[str, npt.ArrayLike] | npt.ArrayLike,
        scores: npt.ArrayLike | None = None,
    ) -> list[DriftAlarm]:
        """Add a batch; run the checks it completes; return (and call back) any alarms.

        `features` is a mapping of column -> 1-D array (extra columns are ignored), or a
        ``(rows, columns)`` array in the monitor's column order.
        """
        batch = self._as_matrix(features)
        score_batch = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
        if score_batch is not None and score_batch.size != batch.shape[0]:
            raise DriftError(f"Got {score_batch.size} scores for a batch of {batch.shape[0]} rows.")
        alarms: list[DriftAlarm] = []
        start = 0
        while start < batch.shape[0]:
            # Feed up to the next check so that checks fall every `stride` rows exactly,
            # however the stream happens to be batched.
            need = (
                self.window - self._filled
                if self._filled < self.window
                else self.stride - self._since_check
            )
            take = min(max(need, 1), batch.shape[0] - start)
            self._append(
                batch[start : start + take],
                None if score_batch is None else score_batch[start : start + take],
            )
            start += take
            if self._filled >= self.window and (
                self._since_check >= self.stride or self._since_check == self._filled
            ):
                alarm = self._check()
                if alarm is not None:
                    alarms.append(alarm)
        return alarms

    def _as_matrix(self, features: Mapping[str, npt.ArrayLike] | npt.ArrayLike) -> FloatArray:
        if isinstance(features, Mapping):
            missing = [n for n in self.columns if n not in features]
            if missing:
                raise DriftError(
                    f"Batch lacks the monitored columns {missing}; it has {sorted(features)}."
                )
            arrays = [np.asarray(features[n], dtype=np.float64).reshape(-1) for n in self.columns]
            if len({a.size for a in arrays}) > 1:
                raise DriftError(
                    "Batch columns differ in length: "
                    f"{ {n: a.size for n, a in zip(self.columns, arrays, strict=True)} }."
                )
            return np.column_stack(arrays)
        matrix = np.asarray(features, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.columns):
            raise DriftError(
                f"Batch has shape {matrix.shape}; expected (rows, {len(self.columns)}) in the "
                f"order {list(self.columns)}."
            )
        return matrix

    def _append(self, rows: FloatArray, scores: FloatArray | None) -> None:
        count = rows.shape[0]
        slots = (self._head + np.arange(count)) % self.window
        self._buffer[slots] = rows
        self._scores[slots] = np.nan if scores is None else scores
        self._head = int((self._head + count) % self.window)
        self._filled = min(self.window, self._filled + count)
        self._since_check += count
        self.rows += count

    def _check(self) -> DriftAlarm | None:
        self._since_check = 0
        self.checks += 1
        z, stats, counts = scaled_ks(self._sorted, self._buffer)
        self.last_statistics, self.last_counts = stats, counts
        peak = float(z.max())
        if peak <= self.threshold:
            return None
        p_values = ks_pvalues(stats, self._sorted.sizes, counts, method="asymp")
        alarm = DriftAlarm(
            row=self.rows,
            statistic=peak,
            threshold=self.threshold,
            columns=tuple(n for n, zj in zip(self.columns, z, strict=True) if zj > self.threshold),
            p_values={n: float(p) for n, p in zip(self.columns, p_values, strict=True)},
            js_distance=self._score_distance(),
            window=self.window,
            reference=self.reference.source,
            release=self.release,
        )
        self.alarms += 1
        self.reset()
        if self.on_alarm is not None:
            self.on_alarm(alarm)
        return alarm

    def _score_distance(self) -> float | None:
        ref = self.reference.scores
        starts = self.reference.score_bin_starts
        scores = self._scores[~np.isnan(self._scores)]
        if ref is None or starts is None or scores.size == 0:
            return None
        _, counts, positions = ks_statistics(ref, scores.reshape(-1, 1))
        ranks = np.searchsorted(ref.views[0], ref.views[0], side="left")
        ref_counts = np.bincount(
            np.searchsorted(starts[0], ranks, side="right") - 1, minlength=starts.shape[1]
        )
        current = window_bin_counts(positions, counts, starts)
        return float(jensen_shannon(ref_counts, current[0])[0])


def record_drift_alarm(
    registry: Registry, alarm: DriftAlarm, *, subject: str | None = None
) -> AuditRecord:
    """Append `alarm` to the registry's audit chain (action ``drift.alarm``).

    The subject is the release (``name:version``) when known, so ``headrace audit log
    NAME`` lists the alarms with the release's other events.
    """
    target = subject or alarm.release or alarm.reference
    record = registry.record_event(DRIFT_ALARM_ACTION, target, alarm.to_dict())
    logger.warning(
        "drift alarm on %s at row %d: %s (statistic %.3f > %.3f), audit #%d",
        target,
        alarm.row,
        ", ".join(alarm.columns),
        alarm.statistic,
        alarm.threshold,
        record.seq,
    )
    return record
