"""`probe_redis`: does the server answer, and what do the stream and its group look like.

Read-only commands (``PING``, ``TYPE``, ``XLEN``, ``XINFO GROUPS``): a missing stream or
group is reported, not created (the source creates both when it starts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headrace.errors import ConfigError, DependencyMissingError
from headrace.streams.probe import ProbeResult, Role, describe_endpoint
from headrace.streams.redis.client import (
    _check_client_options,
    _client_errors,
    _close,
    _make_client,
    _split_options,
    _text,
)
from headrace.streams.redis.sink import _SINK_OPTIONS
from headrace.streams.redis.source import _SOURCE_OPTIONS

__all__ = ["probe_redis"]


def probe_redis(
    url: str,
    *,
    role: Role,
    topic: str | None = None,
    group: str | None = None,
    options: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> ProbeResult:
    """``PING`` the server; for a stream, check it is one and whether the group exists.

    Parameters
    ----------
    url
        ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
    role
        ``"source"`` (the stream and `group`), ``"sink"`` (the stream) or ``"store"``
        (the server only, e.g. the dedupe store).
    topic
        The stream key (a source or sink without one fails, as it would at start); for
        a ``"store"``, none.
    group
        The source's consumer group.
    options
        The endpoint's options, checked as the source or sink would check them; the
        probe's own timeouts replace the socket timeouts among them.
    timeout
        Seconds each call may take (connecting, and each command).
    """
    endpoint = describe_endpoint(url, topic)
    known = _SOURCE_OPTIONS if role == "source" else _SINK_OPTIONS
    owner = "RedisStreamSource" if role == "source" else "RedisStreamSink"
    try:
        if topic is None and role != "store":
            raise ConfigError(f"{owner} needs a stream key: set topic in the pipeline's {role}")
        ours, extra = _split_options(options, known)
        _check_client_options(url, extra, known=known, owner=owner)
        bounded = {**ours, "socket_timeout": timeout, "socket_connect_timeout": timeout}
        client = _make_client(url, {**bounded, "retries": 0}, extra, owner=owner)
    except (ConfigError, DependencyMissingError) as exc:
        return ProbeResult(endpoint=endpoint, ok=False, detail=str(exc))
    try:
        client.ping()
        if topic is None:
            return ProbeResult(endpoint=endpoint, ok=True, detail="answers PING")
        kind = _text(client.execute_command("TYPE", topic))
        if kind == "none":
            created = f"with group '{group}' " if role == "source" and group else ""
            when = "when the source starts" if role == "source" else "by the first append"
            return ProbeResult(
                endpoint=endpoint,
                ok=True,
                detail=f"answers PING; stream '{topic}' does not exist yet: created {created}"
                f"{when}",
            )
        if kind != "stream":
            return ProbeResult(
                endpoint=endpoint,
                ok=False,
                detail=f"key '{topic}' holds a {kind}, not a stream: choose another stream "
                "key in the pipeline, or delete the key if it is stale",
            )
        length = int(client.execute_command("XLEN", topic))
        if role != "source" or not group:
            return ProbeResult(endpoint=endpoint, ok=True, detail=f"stream of {_entries(length)}")
        return ProbeResult(
            endpoint=endpoint,
            ok=True,
            detail=f"stream of {_entries(length)}; {_group(client, topic, group)}",
        )
    except _client_errors() as exc:
        return ProbeResult(endpoint=endpoint, ok=False, detail=_failure(exc, timeout=timeout))
    finally:
        _close(client)


def _group(client: Any, stream: str, group: str) -> str:
    """What ``XINFO GROUPS`` says of `group`: its members and pending entries."""
    for raw in client.execute_command("XINFO", "GROUPS", stream) or []:
        info = dict(zip(raw[::2], raw[1::2], strict=False))
        if _text(info.get(b"name", b"")) == group:
            return (
                f"group '{group}' has {int(info.get(b'consumers', 0))} consumer(s) and "
                f"{int(info.get(b'pending', 0))} pending entries"
            )
    return f"group '{group}' does not exist yet: created when the source starts"


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _failure(exc: BaseException, *, timeout: float) -> str:
    """What went wrong talking to the server, and what to do."""
    from redis import exceptions

    if isinstance(exc, exceptions.AuthenticationError):
        return f"Redis refused the credentials ({exc}): check the user and password in the URL"
    if isinstance(exc, exceptions.ConnectionError | exceptions.TimeoutError | OSError):
        return (
            f"Redis is unreachable within {timeout:g}s ({exc}): check the server is running "
            "and the URL is right"
        )
    return f"Redis refused the probe ({exc}): check the user's permissions (ACL)"
