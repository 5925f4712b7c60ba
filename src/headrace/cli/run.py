"""``headrace run`` and ``headrace replay``: a stream worker in the foreground."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from headrace.cli.context import open_registry, settings_from
from headrace.cli.output import print_json

if TYPE_CHECKING:
    from headrace.monitoring.metrics import WorkerMetrics
    from headrace.pipeline.spec import PipelineSpec
    from headrace.pipeline.stats import WorkerStats
    from headrace.registry.store import Registry

__all__ = ["NOTHING_SCORED", "parse_start", "replay", "run"]

NOTHING_SCORED = 3
"""Exit code of ``--until-end`` when every event was dead-lettered (as ``predict``'s 3)."""

PipelineArg = Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 9108).",
        min=0,
        max=65535,
    ),
]
MetricsHostOption = Annotated[
    str, typer.Option("--metrics-host", help="Address the metrics server listens on.")
]


def parse_start(text: str) -> int | datetime:
    """``--from``: a non-negative offset, or an ISO-8601 time (UTC when no zone is given)."""
    from headrace.errors import ConfigError

    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"--from '{text}' is neither an offset nor an ISO-8601 time: use e.g. 1200 or "
            "2026-11-22T08:00:00Z."
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _print_stats(name: str) -> Any:
    tty = sys.stderr.isatty()

    def show(stats: WorkerStats) -> None:
        p50, p99 = stats.batch_latency_ms.percentiles(50, 99)
        line = (
            f"[{name}] {stats.events:,} events ({stats.throughput():,.0f}/s), "
            f"{stats.outputs:,} outputs, {stats.dead_letters:,} dead letters, "
            f"{stats.deduplicated:,} repeats dropped, lag "
            f"{'?' if stats.lag is None else format(stats.lag, ',')}, "
            f"batch p50 {p50:.1f} ms p99 {p99:.1f} ms"
        )
        sys.stderr.write(("\r" + line + "\x1b[K") if tty else line + "\n")
        sys.stderr.flush()

    return show


def _serve_metrics(
    scope: contextlib.ExitStack, spec: PipelineSpec, registry: Registry, *, port: int, host: str
) -> WorkerMetrics:
    """Worker and rollback metrics on one registry, served until `scope` closes."""
    from headrace.monitoring.metrics import WorkerMetrics, new_registry, serve_metrics
    from headrace.monitoring.rollbacks import RollbackCollector
    from headrace.registry.refs import parse_ref

    prometheus = new_registry()
    metrics = WorkerMetrics(prometheus, pipeline=spec.name)
    prometheus.register(RollbackCollector(registry, models=[parse_ref(spec.model).name]))
    server = serve_metrics(prometheus, port=port, host=host)
    scope.callback(server.close)
    sys.stderr.write(f"[{spec.name}] metrics at {server.url}\n")
    return metrics


def _work(
    ctx: typer.Context,
    pipeline: Path,
    *,
    start: Any,
    until_end: bool,
    as_json: bool,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    from headrace.pipeline.build import build_worker, tune_worker_process
    from headrace.pipeline.spec import load_pipeline_spec

    spec = load_pipeline_spec(pipeline)
    settings = settings_from(ctx)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second signal: stop waiting for the drain
            raise KeyboardInterrupt
        sys.stderr.write(
            f"\n[{spec.name}] {signal.Signals(signum).name}: draining and "
            "committing, then exiting\n"
        )
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with contextlib.ExitStack() as scope:
            registry = scope.enter_context(open_registry(ctx))
            metrics = (
                None
                if metrics_port is None
                else _serve_metrics(scope, spec, registry, port=metrics_port, host=metrics_host)
            )
            worker = build_worker(
                spec,
                registry=registry,
                home=settings.home,
                start=start,
                on_stats=_print_stats(spec.name),
                metrics=metrics,
            )
            if metrics is None:
                registry.close()  # with metrics, the rollback counter reads it until exit
            tune_worker_process()
            stats = worker.run(stop=stop, until_exhausted=until_end)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = stats.summary()
    if as_json:
        print_json({"pipeline": spec.name, "release": worker.service.release, **summary})
    else:
        sys.stderr.write("\n" if sys.stderr.isatty() else "")
        typer.echo(
            f"[{spec.name}] stopped: {stats.events:,} events, {stats.outputs:,} outputs, "
            f"{stats.dead_letters:,} dead letters, {stats.deduplicated:,} repeats dropped "
            f"in {stats.elapsed_s:.1f}s ({stats.throughput():,.0f} events/s)"
        )
    if until_end and stats.outputs == 0 and stats.dead_letters > 0:
        # A batch job that scored nothing must fail loudly, as `headrace predict` does.
        reason, count = stats.dead_letter_reasons.most_common(1)[0]
        sys.stderr.write(
            f"error: every event was dead-lettered ({stats.dead_letters:,} of "
            f"{stats.events:,}; most often {reason!r}, {count:,} times): check the events "
            "against the release's schema, the dead letters say why for each\n"
        )
        raise typer.Exit(NOTHING_SCORED)


def run(
    ctx: typer.Context,
    pipeline: PipelineArg,
    until_end: Annotated[
        bool, typer.Option("--until-end", help="Stop when the source has no more events.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final stats as JSON.")] = False,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = "127.0.0.1",
) -> None:
    """Run a stream worker; SIGTERM/SIGINT drain, commit and exit 0.

    With --until-end, exit 3 when every event was dead-lettered.
    """
    _work(
        ctx,
        pipeline,
        start=None,
        until_end=until_end,
        as_json=as_json,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )


def replay(
    ctx: typer.Context,
    pipeline: PipelineArg,
    start: Annotated[
        str, typer.Option("--from", help="Offset (e.g. 1200) or ISO-8601 time to replay from.")
    ],
    until_end: Annotated[
        bool, typer.Option("--until-end", help="Stop when the source has no more events.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final stats as JSON.")] = False,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = "127.0.0.1",
) -> None:
    """Re-process a stream from an offset or a time (Kafka offsets-for-times; file lines).

    With --until-end, exit 3 when every event was dead-lettered.
    """
    _work(
        ctx,
        pipeline,
        start=parse_start(start),
        until_end=until_end,
        as_json=as_json,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
