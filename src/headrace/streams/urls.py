"""From a URL to the source or sink it names.

=================================  ============================================
URL                                source / sink
=================================  ============================================
``memory://BROKER[/TOPIC]``        `MemorySource` / `MemorySink`
``file:///abs/path.jsonl``         `FileSource` / `FileSink` (JSONL, CSV, Parquet)
``kafka://host:port[,host:port]``  ``headrace.streams.kafka.KafkaSource`` / ``KafkaSink``
``redis://host:port/db``           ``headrace.streams.redis.RedisStreamSource`` / ``...Sink``
``nats://host:port``               ``headrace.streams.nats.NatsSource`` / ``NatsSink``
=================================  ============================================

The broker connectors are imported only when their scheme is used: they need optional
packages (``headrace[kafka]``, ``headrace[redis]``, ``headrace[nats]``), and say which
one is missing. `probe_endpoint` checks an endpoint the same way, without side effects
(see `headrace.streams.probe`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

from headrace._redact import redact_url
from headrace.errors import ConfigError, HeadraceError
from headrace.streams.base import Sink, Source
from headrace.streams.probe import ProbeResult, Role, describe_endpoint

__all__ = ["SCHEMES", "open_sink", "open_source", "probe_endpoint"]


class _Connector(NamedTuple):
    module: str
    source: str
    sink: str
    address: str  # what the first argument is: "url", or "netloc" (Kafka's bootstrap list)


_CONNECTORS: dict[str, _Connector] = {
    "memory": _Connector("headrace.streams.memory", "MemorySource", "MemorySink", "url"),
    "file": _Connector("headrace.streams.file", "FileSource", "FileSink", "url"),
    "kafka": _Connector("headrace.streams.kafka", "KafkaSource", "KafkaSink", "netloc"),
    "redis": _Connector("headrace.streams.redis", "RedisStreamSource", "RedisStreamSink", "url"),
    "rediss": _Connector("headrace.streams.redis", "RedisStreamSource", "RedisStreamSink", "url"),
    "nats": _Connector("headrace.streams.nats", "NatsSource", "NatsSink", "url"),
}

# Each scheme's probe (module, function), imported only when used, like its connector.
_PROBES: dict[str, tuple[str, str]] = {
    "memory": ("headrace.streams.probe", "probe_memory"),
    "file": ("headrace.streams.file", "probe_file"),
    "kafka": ("headrace.streams.kafka", "probe_kafka"),
    "redis": ("headrace.streams.redis", "probe_redis"),
    "rediss": ("headrace.streams.redis", "probe_redis"),
    "nats": ("headrace.streams.nats", "probe_nats"),
}

SCHEMES: tuple[str, ...] = tuple(f"{scheme}://" for scheme in _CONNECTORS)
"""The URL schemes `open_source` and `open_sink` understand."""


def _connector(url: str, *, role: str) -> tuple[_Connector, str]:
    scheme, sep, rest = url.partition("://")
    found = _CONNECTORS.get(scheme.lower()) if sep else None
    if found is None:
        raise ConfigError(
            f"Unsupported {role} URL '{redact_url(url)}': use one of {', '.join(SCHEMES)} "
            "(e.g. kafka://127.0.0.1:9092, file:///data/events.jsonl, memory://default)"
        )
    if found.address == "netloc":
        address = rest.split("/", 1)[0].split("?", 1)[0]
        if not address:
            raise ConfigError(
                f"{role} URL '{redact_url(url)}' names no servers: use {scheme}://host:port[,host:port]"
            )
        return found, address
    return found, url


def _load(connector: _Connector, name: str) -> Any:
    return getattr(importlib.import_module(connector.module), name)


def _split_start(cls: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Pass a ``start`` option as the ``start=`` keyword to a class that takes one."""
    if "start" not in options:
        return {}
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no introspectable signature: leave it in options
        return {}
    if "start" in parameters:
        return {"start": options.pop("start")}
    return {}


def open_source(
    url: str,
    *,
    topic: str | None = None,
    group: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Source:
    """Build the source `url` names; not opened yet (the runtime calls `Source.open`).

    Parameters
    ----------
    url
        See the table in this module's docstring.
    topic
        The topic, stream, subject or (for a ``file://`` directory) file name. Empty
        means none: the URL must then name it (``memory://``, ``file://``).
    group
        The consumer group (for files: the name of the checkpoint).
    options
        Passed to the source (client settings for brokers). A ``start`` option (replay
        from an offset or time) is passed as the ``start=`` keyword to connectors that
        take it.

    Raises
    ------
    ConfigError
        The scheme is not one of `SCHEMES`, or the URL lacks what its scheme needs.
    DependencyMissingError
        The connector's optional package is not installed.
    """
    connector, address = _connector(url, role="source")
    cls = _load(connector, connector.source)
    opts = dict(options or {})
    extra = _split_start(cls, opts)
    return cast(Source, cls(address, topic=topic or None, group=group, options=opts, **extra))


def open_sink(
    url: str,
    *,
    topic: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Sink:
    """Build the sink `url` names; not opened yet (the runtime calls `Sink.open`).

    Parameters
    ----------
    url
        See the table in this module's docstring.
    topic
        The topic, stream, subject or (for a ``file://`` directory) file name. Empty
        means none: the URL must then name it (``memory://``, ``file://``).
    options
        Passed to the sink (client settings for brokers).

    Raises
    ------
    ConfigError
        The scheme is not one of `SCHEMES`, or the URL lacks what its scheme needs.
    DependencyMissingError
        The connector's optional package is not installed.
    """
    connector, address = _connector(url, role="sink")
    cls = _load(connector, connector.sink)
    return cast(Sink, cls(address, topic=topic or None, options=dict(options or {})))


def probe_endpoint(
    url: str,
    *,
    role: Role,
    topic: str | None = None,
    group: str | None = None,
    options: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> ProbeResult:
    """Check, without side effects, that a worker could use the endpoint `url` names.

    Never raises for an endpoint that is unreachable, missing, misconfigured or of an
    unknown scheme: the `ProbeResult` says so, and what to do.

    Parameters
    ----------
    url, topic, group, options
        As for `open_source` / `open_sink`.
    role
        ``"source"``, ``"sink"`` or ``"store"`` (what is checked differs: a source's
        group, a sink's target).
    timeout
        Seconds the probe may wait for the service.
    """
    try:
        _, address = _connector(url, role=role)
    except ConfigError as exc:
        return ProbeResult(endpoint=describe_endpoint(url, topic), ok=False, detail=str(exc))
    module, name = _PROBES[url.partition("://")[0].lower()]
    try:
        probe = getattr(importlib.import_module(module), name)
        return cast(
            ProbeResult,
            probe(
                address,
                role=role,
                topic=topic or None,
                group=group,
                options=dict(options or {}),
                timeout=timeout,
            ),
        )
    except HeadraceError as exc:  # a connector's own checks raised: still a result
        return ProbeResult(endpoint=describe_endpoint(url, topic), ok=False, detail=str(exc))
