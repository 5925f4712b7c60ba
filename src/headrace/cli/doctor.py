"""``headrace doctor``: check every configured service and say what is wrong.

One line per check, ``ok`` on stdout or ``FAIL`` on stderr, and exit 1 if any failed.
Given pipeline specs, it also probes each pipeline's source, outputs, dead-letter sink
and dedupe store, and resolves its model, without side effects on running workers (see
`headrace.streams.probe`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from headrace.cli.context import settings_from

if TYPE_CHECKING:
    from headrace.pipeline.spec import PipelineSpec
    from headrace.registry.store import Registry
    from headrace.settings import Settings
    from headrace.streams.probe import ProbeResult

__all__ = ["doctor"]

PipelinesArg = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="PIPELINE.yaml",
        help="Pipeline specs whose endpoints to probe too.",
        show_default=False,
    ),
]
TimeoutOption = Annotated[
    float, typer.Option(help="Seconds each endpoint probe may wait for its service.", min=0.1)
]


class _Report:
    """Prints check lines and counts the failures."""

    def __init__(self) -> None:
        self.failures = 0

    def line(self, ok: bool, label: str, text: str) -> None:
        # One line per check, whatever the message (YAML errors span several lines); any
        # URL or secret a service's own error quotes is masked here, whoever raised it.
        from headrace._redact import redact_text

        flat = redact_text(" ".join(text.split()))
        if not ok:
            self.failures += 1
        typer.echo(f"{'ok' if ok else 'FAIL':<6}{label:<9} {flat}", err=not ok)

    def probe(self, label: str, result: ProbeResult) -> None:
        self.line(result.ok, label, f"{result.endpoint}: {result.detail}")


def doctor(
    ctx: typer.Context,
    pipelines: PipelinesArg = None,
    timeout: TimeoutOption = 5.0,
) -> None:
    """Check the registry, the artifact store and each pipeline's endpoints; exit 1 if any fails."""
    from headrace._redact import redact_url
    from headrace.errors import HeadraceError
    from headrace.pipeline.spec import load_pipeline_spec
    from headrace.registry.artifacts import open_artifact_store
    from headrace.registry.store import Registry

    settings = settings_from(ctx)
    report = _Report()
    specs: list[tuple[Path, PipelineSpec]] = []
    unreadable: list[str] = []
    for path in pipelines or []:
        try:
            specs.append((path, load_pipeline_spec(path)))
        except HeadraceError as exc:
            unreadable.append(str(exc))
    models: dict[str, tuple[bool, str]] = {}
    registry_url = settings.registry_url()
    try:
        with Registry(
            registry_url,
            artifacts=settings.artifacts_url(),
            actor=settings.actor,
            cache_dir=settings.release_cache(),
        ) as registry:
            count = registry.check()
            chain = registry.verify_audit()
            models = {spec.model: _resolve(registry, spec.model) for _, spec in specs}
        report.line(
            True,
            "registry",
            f"{redact_url(registry_url)} ({count} releases, audit chain of {chain} records intact)",
        )
    except HeadraceError as exc:
        report.line(False, "registry", f"{redact_url(registry_url)}: {exc}")
    artifacts_url = settings.artifacts_url()
    try:
        open_artifact_store(artifacts_url).check()
        report.line(True, "artifacts", redact_url(artifacts_url))
    except HeadraceError as exc:
        report.line(False, "artifacts", f"{redact_url(artifacts_url)}: {exc}")
    for message in unreadable:
        report.line(False, "pipeline", message)
    for path, spec in specs:
        report.line(True, "pipeline", f"{path}: '{spec.name}', parsed")
        if spec.model in models:
            ok, text = models[spec.model]
            report.line(ok, "model", text)
        for label, result in _probe_pipeline(spec, settings=settings, timeout=timeout):
            report.probe(label, result)
    if report.failures:
        raise typer.Exit(1)


def _resolve(registry: Registry, ref: str) -> tuple[bool, str]:
    """Whether the pipeline's model reference names a release, and which."""
    from headrace.errors import HeadraceError

    try:
        release = registry.get(ref)
    except HeadraceError as exc:
        return False, f"{ref}: {exc}"
    return True, f"{ref} is {release.ref} (digest {release.digest[:16]})"


def _probe_pipeline(
    spec: PipelineSpec, *, settings: Settings, timeout: float
) -> list[tuple[str, ProbeResult]]:
    """(label, result) for the source, each output, the dead-letter sink and the store.

    The probes run side by side, so unreachable services cost one timeout, not one each.
    """
    from headrace.pipeline.build import default_dead_letter_url, source_options
    from headrace.streams.urls import probe_endpoint

    dead_letter = spec.dead_letter
    work: list[tuple[str, Callable[[], ProbeResult]]] = [
        (
            "source",
            partial(
                probe_endpoint,
                spec.source.url,
                role="source",
                topic=spec.source.topic,
                group=spec.group,
                options=source_options(spec, home=settings.home),
                timeout=timeout,
            ),
        )
    ]
    work += [
        (
            "output",
            partial(
                probe_endpoint,
                o.url,
                role="sink",
                topic=o.topic,
                options=o.options,
                timeout=timeout,
            ),
        )
        for o in spec.outputs
    ]
    if dead_letter is None:  # the worker's default: a JSONL file under home
        url = default_dead_letter_url(spec, home=settings.home)
        work.append(("dead-letter", partial(probe_endpoint, url, role="sink", timeout=timeout)))
    else:
        work.append(
            (
                "dead-letter",
                partial(
                    probe_endpoint,
                    dead_letter.url,
                    role="sink",
                    topic=dead_letter.topic,
                    options=dead_letter.options,
                    timeout=timeout,
                ),
            )
        )
    if spec.dedupe.enabled:
        work.append(("dedupe", partial(_probe_dedupe, spec.dedupe.url, timeout=timeout)))
    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        futures = [(label, pool.submit(call)) for label, call in work]
        return [(label, future.result()) for label, future in futures]


def _probe_dedupe(url: str, *, timeout: float) -> ProbeResult:
    """The dedupe store: ``memory://`` or a Redis server (``redis://``, ``unix://``)."""
    from headrace.streams.probe import ProbeResult, describe_endpoint, probe_memory

    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return probe_memory(url, role="store")
    if scheme in ("redis", "rediss", "unix"):
        from headrace.streams.redis import probe_redis

        return probe_redis(url, role="store", timeout=timeout)
    return ProbeResult(
        endpoint=describe_endpoint(url),
        ok=False,
        detail="unsupported dedupe URL: use memory:// or redis://host:port/db",
    )
