"""A worker's monitors as observers of its loop, one small contract for all.

Each watcher (live accuracy, payload samples, traces, drift, the dead-letter scrubber)
is an `Observer`: the worker calls `open` before its loop, `on_batch` with each batch's
`BatchOutcome`, `on_settle` after each settle and `close` when it stops. A new watcher
is one new class here, not lines in `Worker.process`. `build_monitors` (in
`headrace.pipeline.observe`) builds the ones a pipeline spec asks for.
"""

from __future__ import annotations

from headrace.pipeline.monitors.accuracy import AccuracyObserver
from headrace.pipeline.monitors.base import Observer
from headrace.pipeline.monitors.samples import SamplesObserver
from headrace.pipeline.monitors.scrub import DeadLetterScrubber
from headrace.pipeline.monitors.tracing import TracingObserver

__all__ = [
    "AccuracyObserver",
    "DeadLetterScrubber",
    "Observer",
    "SamplesObserver",
    "TracingObserver",
]
