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
    from headrace._redact import redact_url
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
    # even where a library quotes them without their URL (see headrace._redact).
    redact_url(settings.registry_url())
    redact_url(settings.artifacts_url())
    return settings


def open_registry(ctx: typer.Context, *, must_exist: bool = False) -> Registry:
    """The registry the flags and environment point at.

    With `must_exist`, a SQLite registry whose file is missing is an error naming where
    it was looked for, rather than a new empty registry: a command that only reads one
    was almost surely pointed at the wrong place (another directory, a missing
    ``HEADRACE_REGISTRY``). Registering creates it.
    """
    from headrace.registry.store import Registry

    settings = settings_from(ctx)
    url = settings.registry_url()
    if must_exist and url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        from headrace.errors import RegistryError

        where = (
            "from --registry or HEADRACE_REGISTRY"
            if settings.registry
            else f"the default under HEADRACE_HOME '{settings.home}'"
        )
        raise RegistryError(
            f"No registry at '{url}' ({where}): register a release "
            "first (headrace register), or point HEADRACE_REGISTRY or --registry at an existing "
            "registry (or HEADRACE_HOME at its directory)"
        )
    from headrace.registry.signing import SigningPolicy

    return Registry(
        settings.registry_url(),
        artifacts=settings.artifacts_url(),
        actor=settings.actor,
        cache_dir=settings.release_cache(),
        # HEADRACE_REQUIRE_SIGNED=1: load only releases a HEADRACE_TRUSTED_KEYS key signed.
        signing=SigningPolicy.from_env(),
    )
