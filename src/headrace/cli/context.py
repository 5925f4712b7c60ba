"""What every command needs: settings from flags and environment, and the registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from headrace.registry.store import Registry
    from headrace.settings import Settings

__all__ = ["CliState", "open_registry", "settings_from"]


@dataclass
class CliState:
    """Global flags, kept on the typer context for sub-commands."""

    registry: str | None = None
    artifacts: str | None = None
    home: Path | None = None


def settings_from(ctx: typer.Context) -> Settings:
    """Settings: flags win over ``HEADRACE_*`` environment, which wins over defaults."""
    from headrace.redaction import redact_url
    from headrace.settings import Settings

    state = ctx.find_root().obj
    overrides: dict[str, object] = {}
    if isinstance(state, CliState):
        if state.registry:
            overrides["registry"] = state.registry
        if state.artifacts:
            overrides["artifacts"] = state.artifacts
        if state.home:
            overrides["home"] = state.home
    settings = Settings(**overrides)  # type: ignore[arg-type]
    # Remember the credentials in these URLs, so that no message or log line shows them
    # even where a library quotes them without their URL (see headrace.redaction).
    redact_url(settings.registry_url())
    redact_url(settings.artifacts_url())
    return settings


def open_registry(ctx: typer.Context) -> Registry:
    """The registry the flags and environment point at."""
    from headrace.registry.store import Registry

    settings = settings_from(ctx)
    return Registry(
        settings.registry_url(),
        artifacts=settings.artifacts_url(),
        actor=settings.actor,
        cache_dir=settings.release_cache(),
    )
