"""Release references: ``name:version``, ``name@alias`` and bare ``name`` (its champion)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from headrace.errors import ConfigError

__all__ = ["ALIAS_PATTERN", "DEFAULT_ALIAS", "ReleaseRef", "parse_ref"]

DEFAULT_ALIAS = "champion"
"""What a bare name resolves to."""

ALIAS_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
"""Aliases start with a letter (so they never look like versions)."""

_REF = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,127})(?:(?::(?P<version>\d+))|(?:@(?P<alias>[^@:]+)))?$"
)


@dataclass(frozen=True, slots=True)
class ReleaseRef:
    """A parsed reference: exactly one of `version` and `alias` is set."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return (
            f"{self.name}:{self.version}"
            if self.version is not None
            else f"{self.name}@{self.alias}"
        )


def parse_ref(text: str) -> ReleaseRef:
    """Parse ``fraud:3``, ``fraud@champion`` or ``fraud`` (= ``fraud@champion``)."""
    match = _REF.fullmatch(text.strip())
    if match is None:
        raise ConfigError(
            f"Invalid release reference '{text}': use NAME:VERSION (fraud:3), "
            "NAME@ALIAS (fraud@champion) or NAME."
        )
    alias = match["alias"]
    if alias is not None and not ALIAS_PATTERN.fullmatch(alias):
        raise ConfigError(
            f"Invalid alias '{alias}' in '{text}': aliases start with a letter and use "
            "letters, digits, '_' and '-'."
        )
    if match["version"] is not None:
        return ReleaseRef(name=match["name"], version=int(match["version"]))
    return ReleaseRef(name=match["name"], alias=alias or DEFAULT_ALIAS)
