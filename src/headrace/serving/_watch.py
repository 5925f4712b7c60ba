"""Noticing alias moves: a cheap registry poll, woken early by PostgreSQL NOTIFY.

Every `interval_s` the watcher reads `Registry.alias_revision` (one indexed ``max(id)``)
and calls back when it changed. With a PostgreSQL registry it also keeps a ``LISTEN``
session on `ALIAS_CHANNEL`: the registry notifies inside the transaction that moves an
alias, so the watcher wakes at commit instead of at the next poll. Polling stays on as
the fallback: a lost notification session costs latency, never a missed move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.engine import make_url

from headrace._redact import redact_url
from headrace.registry.store import ALIAS_CHANNEL, Registry

_log = logging.getLogger(__name__)

_RECONNECT_S = 5.0


def postgres_dsn(url: str) -> str | None:
    """The libpq connection string of a PostgreSQL registry URL, else None."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.split("://", 1)[1]
    try:
        parsed = make_url(url)
    except Exception:  # the registry already refused a bad URL; nothing to listen on
        return None
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class AliasWatcher:
    """Calls `on_tick(changed)` every `interval_s` (sooner after a NOTIFY).

    `changed` says whether the alias revision moved since the last call. The callback
    runs on the event loop, one call at a time; it should start long work as tasks.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        interval_s: float,
        on_tick: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._on_tick = on_tick
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.revision = 0
        self.listening = False
        self.failing = False

    async def start(self) -> None:
        """Read the current revision, then watch in background tasks."""
        self.revision = await asyncio.to_thread(self.registry.alias_revision)
        self._tasks.append(asyncio.create_task(self._poll(), name="headrace-alias-poll"))
        dsn = postgres_dsn(self.registry.url)
        if dsn is not None:
            self._tasks.append(asyncio.create_task(self._listen(dsn), name="headrace-alias-listen"))

    async def stop(self) -> None:
        """Cancel the background tasks and wait for them."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            self._wake.clear()
            try:
                revision = await asyncio.to_thread(self.registry.alias_revision)
            except Exception as exc:
                # A registry outage must not stop serving what is loaded: keep polling,
                # and say so once rather than every interval.
                if not self.failing:
                    _log.warning("cannot poll the registry for alias moves: %s", exc)
                self.failing = True
                continue
            if self.failing:
                _log.warning("registry reachable again; following alias moves")
            self.failing = False
            changed = revision != self.revision
            self.revision = revision
            try:
                await self._on_tick(changed)
            except Exception:
                _log.exception("handling an alias change failed; retrying at the next poll")
                self.revision = -1  # force `changed` next time

    async def _listen(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError:
            _log.warning(
                "psycopg is missing (pip install 'headrace[postgres]'): alias moves are "
                "noticed by polling only"
            )
            return
        where = redact_url(self.registry.url)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {ALIAS_CHANNEL}")
                    self.listening = True
                    _log.debug("listening for alias moves on %s", where)
                    self._wake.set()  # a move during the (re)connect is not lost
                    async for _notify in conn.notifies():
                        self._wake.set()
            except Exception as exc:  # psycopg.Error, or the socket under it
                _log.warning(
                    "alias notifications from %s lost (%s); polling every %.1fs, "
                    "reconnecting in %.0fs",
                    where,
                    str(exc).strip(),
                    self.interval_s,
                    _RECONNECT_S,
                )
            finally:
                self.listening = False
            await asyncio.sleep(_RECONNECT_S)
