"""``headrace doctor``: check every configured service and say what is wrong."""

from __future__ import annotations

import typer

from headrace.cli.context import settings_from

__all__ = ["doctor"]


def doctor(ctx: typer.Context) -> None:
    """Check the registry and the artifact store; exit 1 if any check fails."""
    from headrace.errors import HeadraceError
    from headrace.redaction import redact_url
    from headrace.registry.artifacts import open_artifact_store
    from headrace.registry.store import Registry

    settings = settings_from(ctx)
    failures = 0
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
        typer.echo(
            f"ok    registry  {redact_url(registry_url)} ({count} releases, "
            f"audit chain of {chain} records intact)"
        )
    except HeadraceError as exc:
        failures += 1
        typer.echo(f"FAIL  registry  {redact_url(registry_url)}: {exc}", err=True)
    artifacts_url = settings.artifacts_url()
    try:
        open_artifact_store(artifacts_url).check()
        typer.echo(f"ok    artifacts {artifacts_url}")
    except HeadraceError as exc:
        failures += 1
        typer.echo(f"FAIL  artifacts {artifacts_url}: {exc}", err=True)
    if failures:
        raise typer.Exit(1)
