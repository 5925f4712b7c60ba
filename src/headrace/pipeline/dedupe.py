"""Remembering which events were already emitted, so repeats after a crash are dropped.

An id is recorded only after its output was acknowledged by every sink: a crash between
emitting and recording can only cause a repeat (which the next run drops), never a loss.

When Redis goes away after it answered once, `RedisDedupe` pauses and retries (backing off
up to `max_backoff_s`) until it answers again, instead of guessing: treating an unknown id
as new would let repeats escape, and stopping the worker would turn a blip into a
crash loop. The worker scores nothing meanwhile (its source waits, nothing is lost); one
warning says when the outage began and one line when it ended. A store that never
answered (a wrong URL) is an error at once, so a misconfiguration is not mistaken for an
outage.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from headrace._redact import redact_url
from headrace.errors import DependencyMissingError, StreamUnavailableError

__all__ = ["DedupeStore", "MemoryDedupe", "RedisDedupe", "open_dedupe"]

log = logging.getLogger("headrace.pipeline")

_T = TypeVar("_T")


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
    """Ids in Redis (``SET key 1 NX EX ttl``), shared by every worker of a pipeline.

    Parameters
    ----------
    url
        ``redis://host:port/db`` (``rediss://`` or ``unix://`` too).
    namespace
        Keeps pipelines apart (the pipeline's name).
    ttl_s
        How long an id is remembered.
    max_backoff_s
        The longest wait between two tries while Redis is down.
    give_up_after_s
        Raise `StreamUnavailableError` once an outage lasted this long; None (the
        default) waits for as long as it takes, so no repeat ever escapes.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        ttl_s: float,
        max_backoff_s: float = 2.0,
        give_up_after_s: float | None = None,
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise DependencyMissingError("redis", "redis", "Redis dedupe") from exc
        self.url = url
        self.max_backoff_s = max_backoff_s
        self.give_up_after_s = give_up_after_s
        self.outages = 0
        self.paused_s = 0.0
        self._reached = False
        self._prefix = f"headrace:dedupe:{namespace}:"
        self._ttl = max(1, int(ttl_s))
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30
        )
        # BusyLoadingError (a restarted Redis loading its data) is a ConnectionError.
        self._errors: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
        )

    def _fail(self, exc: BaseException) -> StreamUnavailableError:
        return StreamUnavailableError(
            f"Dedupe store '{redact_url(self.url)}' is unreachable: {exc}. Start Redis or "
            "set dedupe.url to memory:// (repeats are then dropped per worker only)."
        )

    def _call(self, operation: Callable[[], _T]) -> _T:
        """`operation`, retried while Redis is down (once it has answered before)."""
        try:
            result = operation()
        except self._errors as exc:
            if not self._reached:
                raise self._fail(exc) from exc
            return self._wait_out(operation, exc)
        self._reached = True
        return result

    def _wait_out(self, operation: Callable[[], _T], first: BaseException) -> _T:
        self.outages += 1
        began = time.monotonic()
        where = redact_url(self.url)
        log.warning(
            "dedupe store '%s' is unreachable (%s): pausing until it answers again; "
            "nothing is scored meanwhile, nothing is lost",
            where,
            first,
        )
        backoff = 0.05
        while True:
            waited = time.monotonic() - began
            if self.give_up_after_s is not None and waited >= self.give_up_after_s:
                self.paused_s += waited
                raise self._fail(first)
            time.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            try:
                result = operation()
            except self._errors:
                continue
            waited = time.monotonic() - began
            self.paused_s += waited
            log.warning("dedupe store '%s' answers again after %.1f s", where, waited)
            return result

    def seen(self, keys: Sequence[str]) -> list[bool]:
        """One round trip: ``EXISTS`` for every key in a pipeline."""
        if not keys:
            return []
        names = [self._prefix + key for key in keys]

        def exists() -> list[bool]:
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.exists(name)
            return [bool(found) for found in pipe.execute()]

        return self._call(exists)

    def record(self, keys: Sequence[str]) -> None:
        """One round trip: ``SET NX EX`` for every key in a pipeline (safe to repeat)."""
        if not keys:
            return
        names = [self._prefix + key for key in keys]

        def store() -> None:
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.set(name, b"1", nx=True, ex=self._ttl)
            pipe.execute()

        self._call(store)

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
