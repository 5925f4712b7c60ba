"""Drift detection: is the data a model sees now still the data it was trained on?

`DriftReference` prepares the reference side once (sorted values, decile bins, category
counts; from columns, a file or a release's profile). `check_drift` tests a window of
every column at once: KS for numeric columns, chi-square for categorical ones, PSI, the
model's scores (Jensen-Shannon), optionally MMD over all numeric columns; p-values are
corrected across columns (Bonferroni or Benjamini-Hochberg). `OnlineDriftMonitor` runs
it over a stream with a threshold calibrated for a target number of rows between false
alarms, and `record_drift_alarm` writes an alarm to the audit log.
"""

from __future__ import annotations

from headrace.monitoring.drift.calibration import Calibration, calibrate_threshold, scaled_ks
from headrace.monitoring.drift.check import (
    DEFAULT_ALPHA,
    JS_THRESHOLD,
    ColumnDrift,
    DriftReport,
    PredictionDrift,
    boolean_columns,
    boolean_counts,
    check_drift,
    window_bin_counts,
)
from headrace.monitoring.drift.correction import Correction, adjust_pvalues
from headrace.monitoring.drift.distances import (
    PSI_EPSILON,
    chi_square,
    jensen_shannon,
    population_stability_index,
)
from headrace.monitoring.drift.files import DRIFT_FILE_SUFFIXES, read_drift_file
from headrace.monitoring.drift.ks import (
    EXACT_MAX_CELLS,
    KSMethod,
    SortedColumns,
    ks_exact_pvalue,
    ks_pvalues,
    ks_statistics,
)
from headrace.monitoring.drift.mmd import MMD_MAX_ROWS, MMD_PERMUTATIONS, MMDResult, mmd_test
from headrace.monitoring.drift.online import (
    DRIFT_ALARM_ACTION,
    DriftAlarm,
    OnlineDriftMonitor,
    record_drift_alarm,
)
from headrace.monitoring.drift.reference import (
    NUMERIC_BINS,
    OTHER_CATEGORY,
    ColumnKind,
    DriftReference,
    column_kind,
    columns_from_table,
)
from headrace.monitoring.drift.report import format_p, render_html

__all__ = [
    "DEFAULT_ALPHA",
    "DRIFT_ALARM_ACTION",
    "DRIFT_FILE_SUFFIXES",
    "EXACT_MAX_CELLS",
    "JS_THRESHOLD",
    "MMD_MAX_ROWS",
    "MMD_PERMUTATIONS",
    "NUMERIC_BINS",
    "OTHER_CATEGORY",
    "PSI_EPSILON",
    "Calibration",
    "ColumnDrift",
    "ColumnKind",
    "Correction",
    "DriftAlarm",
    "DriftReference",
    "DriftReport",
    "KSMethod",
    "MMDResult",
    "OnlineDriftMonitor",
    "PredictionDrift",
    "SortedColumns",
    "adjust_pvalues",
    "boolean_columns",
    "boolean_counts",
    "calibrate_threshold",
    "check_drift",
    "chi_square",
    "column_kind",
    "columns_from_table",
    "format_p",
    "jensen_shannon",
    "ks_exact_pvalue",
    "ks_pvalues",
    "ks_statistics",
    "mmd_test",
    "population_stability_index",
    "read_drift_file",
    "record_drift_alarm",
    "render_html",
    "scaled_ks",
    "window_bin_counts",
]
