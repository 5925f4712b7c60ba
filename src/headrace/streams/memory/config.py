"""What the memory source and sink share: their URL and the ``start`` option, parsed once."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

from headrace.errors import ConfigError
from headrace.streams.memory.brokers import DEFAULT_BROKER, MemoryBroker

__all__ = []


def _parse_url(
    url: str | None,
    *,
    topic: str | None,
    group: str | None,
    broker: MemoryBroker | None,
    role: str,
) -> tuple[str, str, str | None]:
    """``memory://NAME[/TOPIC][?group=G]`` -> broker name, topic, group."""
    if url is None:
        url = f"memory://{DEFAULT_BROKER if broker is None else broker.name}"
    parsed = urlparse(url)
    if parsed.scheme != "memory":
        raise ConfigError(
            f"{role} URL '{url}' is not a memory:// URL: use memory://BROKER/TOPIC "
            "(e.g. memory://default/events)"
        )
    name = parsed.netloc or DEFAULT_BROKER
    if broker is not None and name != broker.name:
        raise ConfigError(
            f"{role} URL '{url}' names broker '{name}' but broker={broker!r} was passed: "
            "give it in one place"
        )
    query = parse_qs(parsed.query)
    path_topic = parsed.path.strip("/") or None
    url_group = query.get("group", [None])[-1]
    chosen_topic = _one_of("topic", path_topic, topic or None, url=url, role=role)
    if chosen_topic is None:
        raise ConfigError(
            f"{role} URL '{url}' names no topic: use memory://{name}/TOPIC or pass topic=..."
        )
    chosen_group = _one_of("group", url_group, group or None, url=url, role=role)
    return name, chosen_topic, chosen_group


def _one_of(what: str, in_url: str | None, given: str | None, *, url: str, role: str) -> str | None:
    if in_url is not None and given is not None and in_url != given:
        raise ConfigError(
            f"{role} URL '{url}' names {what} '{in_url}' but {what}='{given}' was passed: "
            "give it in one place"
        )
    return given if given is not None else in_url


Start = int | dt.datetime | Literal["earliest", "latest"] | None
"""A parsed ``start`` option: an offset, a time, ``"earliest"``/``"latest"``, or None."""


def _parse_start(start: Any, *, where: str) -> Start:
    """Check a ``start`` option once, at construction, so a typo fails before any work."""
    if start is None:
        return None
    if isinstance(start, str):
        text = start.strip().lower()
        if text in ("", "committed"):
            return None
        if text == "earliest":
            return "earliest"
        if text == "latest":
            return "latest"
        if text.isdigit():
            return int(text)
        try:
            start = dt.datetime.fromisoformat(start.strip())
        except ValueError:
            raise ConfigError(
                f"{where}: start={start!r} is neither an offset, an ISO time, nor "
                "'earliest'/'latest'/'committed'"
            ) from None
    if isinstance(start, dt.datetime):
        return start if start.tzinfo is not None else start.replace(tzinfo=dt.UTC)
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return start
    raise ConfigError(
        f"{where}: start={start!r} must be an offset >= 0, an ISO time (datetime), or "
        "'earliest'/'latest'/'committed'"
    )
