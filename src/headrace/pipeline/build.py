"""From a spec to a running worker: the release, the source, the sinks, the dedupe store."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headrace.inference.loading import load_release
from headrace.monitoring.metrics import WorkerMetrics
from headrace.pipeline.dedupe import open_dedupe
from headrace.pipeline.observe import build_monitors
from headrace.pipeline.spec import PipelineSpec
from headrace.pipeline.stats import WorkerStats
from headrace.pipeline.worker import Worker
from headrace.registry.refs import parse_ref
from headrace.registry.store import Registry
from headrace.rollout.follow import ReleaseFollower
from headrace.rollout.participant import RolloutParticipant, instance_name
from headrace.runtimes.footprint import measure_footprint
from headrace.streams.urls import open_sink, open_source

__all__ = [
    "build_worker",
    "default_dead_letter_url",
    "default_shadow_url",
    "tune_worker_process",
]

_log = logging.getLogger(__name__)


def default_dead_letter_url(spec: PipelineSpec, *, home: Path) -> str:
    """Where dead letters go when the spec names no sink: a JSONL file, never nowhere."""
    return f"file://{(home / 'dead-letters' / f'{spec.name}.jsonl').absolute()}"


def default_shadow_url(spec: PipelineSpec, *, home: Path) -> str:
    """Where a shadowing candidate's outputs go when the spec names no sink."""
    return f"file://{(home / 'shadow' / f'{spec.name}.jsonl').absolute()}"


def source_options(spec: PipelineSpec, *, home: Path) -> dict[str, Any]:
    """The source's options as a worker opens it (``headrace doctor`` probes the same).

    A file source keeps its checkpoint under ``HEADRACE_HOME/checkpoints``: the worker's
    own state lives under its home, never beside the user's data.
    """
    options = dict(spec.source.options)
    if spec.source.url.lower().startswith("file://") and "checkpoint" not in options:
        options.setdefault("checkpoint_dir", str((home / "checkpoints").absolute()))
    return options


def tune_worker_process() -> None:
    """Tune a worker process once its model is loaded, before the hot loop.

    - Native thread pools (OpenMP, BLAS) go down to one thread: a worker scores small
      batches, where waking threads costs more than it gains (a 100-tree gradient boosting
      model took 11 ms per row with OpenMP threads under load, 0.56 ms with one), and
      throughput scales by running more workers, one per core.
    - Everything allocated so far (the model, the libraries) is frozen out of the
      garbage collector's reach, so a full collection does not walk it again and again.
    """
    import gc

    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    gc.collect()
    gc.freeze()


def build_worker(
    spec: PipelineSpec,
    *,
    registry: Registry,
    home: Path,
    start: Any = None,
    on_stats: Callable[[WorkerStats], None] | None = None,
    metrics: WorkerMetrics | None = None,
    tracer_provider: Any = None,
) -> Worker:
    """Load the release and connect everything the spec names (not opened yet).

    Parameters
    ----------
    start
        Replay position for the source (an offset or a datetime), passed as its
        ``start`` option; None resumes from the group's committed position.
    metrics
        Where the worker reports; the release's load time and memory are measured too.
    tracer_provider
        The OpenTelemetry provider for the spec's ``tracing`` (one that keeps every span
        it is given); None builds one exporting over OTLP when
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else uses the global provider.
    """
    # The serving loader's path: the first event must not pay for the model's lazy
    # initialisation, and a release that cannot score its own reference rows never starts.
    if metrics is None:
        loaded = load_release(registry, spec.model)
    else:
        loading = time.perf_counter()
        loaded, footprint = measure_footprint(lambda: load_release(registry, spec.model))
        metrics.observe_load(
            loaded.service.release,
            seconds=time.perf_counter() - loading,
            memory_bytes=footprint,
        )
    service = loaded.service
    _log.info(
        "loaded %s, warm-up %d rows in %.1f ms",
        service.release,
        loaded.warmup_rows,
        loaded.warmup_seconds * 1000,
    )
    options = source_options(spec, home=home)
    if start is not None:
        options["start"] = start
    source = open_source(
        spec.source.url, topic=spec.source.topic, group=spec.group, options=options
    )
    outputs = [open_sink(o.url, topic=o.topic, options=dict(o.options)) for o in spec.outputs]
    if spec.dead_letter is not None:
        dead_letter = open_sink(
            spec.dead_letter.url,
            topic=spec.dead_letter.topic,
            options=dict(spec.dead_letter.options),
        )
    else:
        dead_letter = open_sink(default_dead_letter_url(spec, home=home), topic="", options={})
    dedupe = (
        open_dedupe(
            spec.dedupe.url,
            namespace=spec.name,
            ttl_s=spec.dedupe.ttl_s,
            max_keys=spec.dedupe.max_keys,
        )
        if spec.dedupe.enabled
        else None
    )
    ref = parse_ref(spec.model)
    follower = None
    participant = None
    shadow_sink = None
    if spec.rollout.follow and ref.alias is not None:
        shadow_end = spec.shadow
        shadow_sink = (
            open_sink(shadow_end.url, topic=shadow_end.topic, options=dict(shadow_end.options))
            if shadow_end is not None
            else open_sink(default_shadow_url(spec, home=home), topic="", options={})
        )
        follower = ReleaseFollower(registry, ref, initial=loaded, interval_s=spec.rollout.poll_s)
        participant = RolloutParticipant(
            registry,
            instance=instance_name(f"worker:{spec.name}"),
            interval_s=spec.rollout.poll_s,
            lease_ttl_s=spec.rollout.lease_ttl_s,
            decide=spec.rollout.decide,
        )
    return Worker(
        spec,
        service=service,
        follower=follower,
        participant=participant,
        shadow_sink=shadow_sink,
        source=source,
        outputs=outputs,
        dead_letter=dead_letter,
        dedupe=dedupe,
        on_stats=on_stats,
        metrics=metrics,
        monitors=build_monitors(
            spec,
            service=service,
            home=home,
            tracer_provider=tracer_provider,
            registry=registry,
            metrics=metrics,
            # The edge reads the environment; the monitors are given its values.
            otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            sample_key=None if spec.samples is None else os.environ.get(spec.samples.key_env),
        ),
    )
