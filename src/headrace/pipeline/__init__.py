"""The stream engine: a worker that turns a live event stream into predictions.

source -> decode -> validate -> dedupe -> predict -> postprocess -> sinks, one
micro-batch at a time (`Worker.process` calls each stage by name; a `Checkpoint`
settles), committing source offsets only after every sink acknowledged the batch
(at-least-once), with idempotency keys on every output and a dead letter, with its
reason, for every bad event. Monitors (traces, samples, live accuracy, drift), each an
`Observer`, read each batch's `BatchOutcome` as it passes.
"""

from __future__ import annotations

from headrace.pipeline.build import (
    build_worker,
    default_dead_letter_url,
    default_shadow_url,
    tune_worker_process,
)
from headrace.pipeline.checkpoint import Checkpoint
from headrace.pipeline.dedupe import DedupeStore, MemoryDedupe, RedisDedupe, open_dedupe
from headrace.pipeline.drift import (
    CALIBRATION_DIR,
    DRIFT_TAG,
    DriftWatch,
    build_drift_watch,
    calibration_path,
)
from headrace.pipeline.feedback import FeedbackReader
from headrace.pipeline.monitors import (
    AccuracyObserver,
    DeadLetterScrubber,
    Observer,
    SamplesObserver,
    TracingObserver,
)
from headrace.pipeline.observe import Monitors, build_monitors, positive_class
from headrace.pipeline.outcome import BatchOutcome
from headrace.pipeline.records import (
    IDEMPOTENCY_HEADER,
    RELEASE_HEADER,
    STAGE_HEADER,
    dead_letter_record,
    idempotency_key,
    output_records,
)
from headrace.pipeline.route import Part, route
from headrace.pipeline.spec import (
    BatchSpec,
    DedupeSpec,
    DriftSpec,
    EndpointSpec,
    FeedbackSpec,
    LimitsSpec,
    PipelineSpec,
    RolloutSpec,
    SamplesSpec,
    TracingSpec,
    load_pipeline_spec,
    pipeline_spec_from_dict,
)
from headrace.pipeline.stats import LatencyReservoir, WorkerStats
from headrace.pipeline.worker import Worker

__all__ = [
    "CALIBRATION_DIR",
    "DRIFT_TAG",
    "IDEMPOTENCY_HEADER",
    "RELEASE_HEADER",
    "STAGE_HEADER",
    "AccuracyObserver",
    "BatchOutcome",
    "BatchSpec",
    "Checkpoint",
    "DeadLetterScrubber",
    "DedupeSpec",
    "DedupeStore",
    "DriftSpec",
    "DriftWatch",
    "EndpointSpec",
    "FeedbackReader",
    "FeedbackSpec",
    "LatencyReservoir",
    "LimitsSpec",
    "MemoryDedupe",
    "Monitors",
    "Observer",
    "Part",
    "PipelineSpec",
    "RedisDedupe",
    "RolloutSpec",
    "SamplesObserver",
    "SamplesSpec",
    "TracingObserver",
    "TracingSpec",
    "Worker",
    "WorkerStats",
    "build_drift_watch",
    "build_monitors",
    "build_worker",
    "calibration_path",
    "dead_letter_record",
    "default_dead_letter_url",
    "default_shadow_url",
    "idempotency_key",
    "load_pipeline_spec",
    "open_dedupe",
    "output_records",
    "pipeline_spec_from_dict",
    "positive_class",
    "route",
    "tune_worker_process",
]
