"""Monitoring: metrics, traces, drift detection, payload samples and live accuracy.

Used by the stream worker and the server; depends only on the release, registry and
audit parts below it, so both transports can share it.

Of drift detection this exports what the other parts use (the reference, the check and
its report, the online monitor and its alarm, drift files and the HTML report); the
detectors' building blocks (KS statistics, distances, p-value corrections, MMD, threshold
calibration) are imported from `headrace.monitoring.drift` itself.
"""

from __future__ import annotations

from headrace.monitoring.accuracy import (
    AccuracyMonitor,
    AccuracyReport,
    JoinStats,
    ReliabilityBin,
    calibration_error,
    roc_auc,
)
from headrace.monitoring.drift import (
    DRIFT_FILE_SUFFIXES,
    Calibration,
    DriftAlarm,
    DriftReference,
    DriftReport,
    OnlineDriftMonitor,
    check_drift,
    columns_from_table,
    format_p,
    ks_pvalues,
    read_drift_file,
    record_drift_alarm,
    render_html,
)
from headrace.monitoring.histogram import BatchHistogram, BatchHistogramChild
from headrace.monitoring.metrics import (
    BATCH_BUCKETS,
    LATENCY_BUCKETS,
    STAGES,
    DriftMetrics,
    MetricsServer,
    SampleCounts,
    SampleMetrics,
    WorkerMetrics,
    exposition,
    new_registry,
    serve_metrics,
    source_lag,
)
from headrace.monitoring.rollbacks import ROLLBACK_KIND, RollbackCollector
from headrace.monitoring.samples import (
    REDACTED,
    ParquetSampleSink,
    PayloadSampler,
    PiiMasker,
    PiiMode,
    SampleSink,
    sample_arrow_schema,
)
from headrace.monitoring.tracing import (
    TRACEPARENT,
    EventTracer,
    HasHeaders,
    http_server_span,
    tracer_provider,
)

__all__ = [
    "BATCH_BUCKETS",
    "DRIFT_FILE_SUFFIXES",
    "LATENCY_BUCKETS",
    "REDACTED",
    "ROLLBACK_KIND",
    "STAGES",
    "TRACEPARENT",
    "AccuracyMonitor",
    "AccuracyReport",
    "BatchHistogram",
    "BatchHistogramChild",
    "Calibration",
    "DriftAlarm",
    "DriftMetrics",
    "DriftReference",
    "DriftReport",
    "EventTracer",
    "HasHeaders",
    "JoinStats",
    "MetricsServer",
    "OnlineDriftMonitor",
    "ParquetSampleSink",
    "PayloadSampler",
    "PiiMasker",
    "PiiMode",
    "ReliabilityBin",
    "RollbackCollector",
    "SampleCounts",
    "SampleMetrics",
    "SampleSink",
    "WorkerMetrics",
    "calibration_error",
    "check_drift",
    "columns_from_table",
    "exposition",
    "format_p",
    "http_server_span",
    "ks_pvalues",
    "new_registry",
    "read_drift_file",
    "record_drift_alarm",
    "render_html",
    "roc_auc",
    "sample_arrow_schema",
    "serve_metrics",
    "source_lag",
    "tracer_provider",
]
