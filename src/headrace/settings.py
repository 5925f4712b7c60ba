"""Where things live, from flags, environment (``HEADRACE_`` prefix) or defaults.

Settings are built once at the edge (the CLI, a server's start-up) and passed down;
no module reads the environment behind its caller's back.
"""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_HOME", "Settings", "default_actor"]

DEFAULT_HOME = Path(".headrace")
"""The embedded default's directory, relative to the working directory."""


def default_actor() -> str:
    """``user@host``: who a registry mutation is attributed to unless HEADRACE_ACTOR says."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Settings(BaseSettings):
    """Locations and identity shared by every command.

    Parameters
    ----------
    registry
        ``sqlite:///path.db`` (default under ``./.headrace/``) or ``postgresql://...``.
    artifacts
        ``file:///path`` (default under ``./.headrace/``) or ``s3://bucket/prefix``.
    cache_dir
        Where fetched release files are kept (verified on every load).
    actor
        Who mutations are attributed to in alias history and the audit log.
    """

    model_config = SettingsConfigDict(env_prefix="HEADRACE_", env_nested_delimiter="__")

    home: Path = DEFAULT_HOME
    registry: str = ""
    artifacts: str = ""
    cache_dir: Path | None = None
    actor: str = Field(default_factory=default_actor)

    def registry_url(self) -> str:
        """The registry URL, defaulting to SQLite under `home`."""
        return self.registry or f"sqlite:///{(self.home / 'registry.db').absolute()}"

    def artifacts_url(self) -> str:
        """The artifact store URL, defaulting to a directory under `home`."""
        return self.artifacts or f"file://{(self.home / 'artifacts').absolute()}"

    def release_cache(self) -> Path:
        """Directory for fetched release files."""
        return (self.cache_dir or self.home / "cache").absolute()
