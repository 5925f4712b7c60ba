"""Remembering which events were already emitted, so repeats after a crash are dropped.

An id is recorded only after its output was acknowledged by every sink: a crash between
emitting and recording can only cause a repeat (which the next run drops), never a loss.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from headrace.errors import DependencyMissingError, StreamUnavailableError

__all__ = ["DedupeStore", "MemoryDedupe", "RedisDedupe", "open_dedupe"]


class DedupeStore(Protocol):
    """Seen-before checks and records of event ids."""

    def seen(self, keys: Sequence[str]) -> list[bool]:
        """For each key, whether it was recorded (and has not expired)."""
        ...

    def record(self, keys: Sequence[str]) -> None:
        """Remember these keys (called after their outputs were acknowledged)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class MemoryDedupe:
    """An LRU of ids with a time to live: the default, per worker process.

    It forgets on restart; configure Redis to drop repeats across restarts and workers.
    """

    def __init__(self, *, ttl_s: float, max_keys: int) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def seen(self, keys: Sequence[str]) -> list[bool]:
        """Keys present and not yet expired."""
        now = time.monotonic()
        expiry = self._expiry
        return [expiry.get(key, 0.0) > now for key in keys]

    def record(self, keys: Sequence[str]) -> None:
        """Insert keys as most recent; evict the oldest past `max_keys`."""
        deadline = time.monotonic() + self.ttl_s
        expiry = self._expiry
        for key in keys:
            expiry[key] = deadline
            expiry.move_to_end(key)
        while len(expiry) > self.max_keys:
            expiry.popitem(last=False)

    def close(self) -> None:
        """Nothing to release."""


class RedisDedupe:
    """Ids in Redis (``SET key 1 NX EX ttl``), shared by every worker of a pipeline."""

    def __init__(self, url: str, *, namespace: str, ttl_s: float) -> None:
        try:
            import redis
        except ImportError as exc:
            raise DependencyMissingError("redis", "redis", "Redis dedupe") from exc
        self.url = url
        self._prefix = f"headrace:dedupe:{namespace}:"
        self._ttl = max(1, int(ttl_s))
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30
        )
        self._errors: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
        )

    def _fail(self, exc: BaseException) -> StreamUnavailableError:
        return StreamUnavailableError(
            f"Dedupe store '{self.url}' is unreachable: {exc}. Start Redis or set "
            "dedupe.url to memory:// (repeats are then dropped per worker only)."
        )

    def seen(self, keys: Sequence[str]) -> list[bool]:
        """One round trip: ``EXISTS`` for every key in a pipeline."""
        if not keys:
            return []
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(self._prefix + key)
            return [bool(found) for found in pipe.execute()]
        except self._errors as exc:
            raise self._fail(exc) from exc

    def record(self, keys: Sequence[str]) -> None:
        """One round trip: ``SET NX EX`` for every key in a pipeline."""
        if not keys:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.set(self._prefix + key, b"1", nx=True, ex=self._ttl)
            pipe.execute()
        except self._errors as exc:
            raise self._fail(exc) from exc

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def open_dedupe(url: str, *, namespace: str, ttl_s: float, max_keys: int) -> DedupeStore:
    """The store a dedupe URL names: ``memory://`` or ``redis://host:port/db``."""
    if url.startswith("memory://"):
        return MemoryDedupe(ttl_s=ttl_s, max_keys=max_keys)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisDedupe(url, namespace=namespace, ttl_s=ttl_s)
    from headrace.errors import ConfigError

    raise ConfigError(f"Unsupported dedupe URL '{url}': use memory:// or redis://host:port/db.")
