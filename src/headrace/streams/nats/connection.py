"""What source and sink share: the private event loop, the options, connecting, streams."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import re
import threading
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from headrace._redact import redact_url
from headrace.errors import ConfigError, DependencyMissingError, StreamUnavailableError
from headrace.streams.nats.headers import _TOKEN, KEY_HEADER

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext

__all__ = []

log = logging.getLogger("headrace.streams.nats")

_T = TypeVar("_T")

_NAME_RULE = re.compile(r"[^.*>\s/\\]+")  # stream and durable consumer names

_COMMON_OPTIONS = frozenset(
    {
        "stream",
        "create_stream",
        "stream_config",
        "key_header",
        "connect_timeout",
        "request_timeout",
        "max_reconnect_attempts",
        "reconnect_time_wait",
    }
)


def _import_nats(feature: str) -> None:
    try:
        import nats  # noqa: F401
    except ImportError as exc:
        raise DependencyMissingError("nats-py", "nats", feature) from exc


# --- the private event loop ------------------------------------------------------------


class _Loop:
    """An asyncio event loop in a daemon thread that synchronous code calls into."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Schedule `coro` on the loop; the caller waits on the returned future."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, _T], *, timeout: float, what: str) -> _T:
        """Run `coro` on the loop and wait for it; `StreamUnavailableError` past `timeout`.

        The coroutines given here bound their own waits; `timeout` only guards against a
        wedged loop.
        """
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if not future.done():
                future.cancel()
                raise StreamUnavailableError(f"{what}: no answer within {timeout:.1f}s") from None
            raise

    def stop(self) -> None:
        """Cancel what still runs, stop the loop and join the thread."""
        if self._loop.is_closed():
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._loop.shutdown_asyncgens()

        try:
            self.submit(shutdown()).result(5.0)
        except Exception as exc:  # stopping must not fail: the thread is a daemon anyway
            log.debug("event loop shutdown: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()


# --- connection and stream set-up --------------------------------------------------------


class _Settings:
    """The options shared by source and sink, checked once."""

    def __init__(
        self,
        url: str,
        topic: str,
        options: Mapping[str, Any] | None,
        *,
        known: frozenset[str],
        owner: str,
    ) -> None:
        from nats.aio.client import Client

        if not topic or any(c.isspace() for c in topic):
            raise ConfigError(f"{owner} needs a subject without blanks, got topic={topic!r}")
        self.url = url
        self.shown = redact_url(url)
        self.owner = owner
        self.subject = topic
        ours: dict[str, Any] = {}
        self.connect_options: dict[str, Any] = {}
        for name, value in (options or {}).items():
            (ours if name in known else self.connect_options)[name] = value
        self.options = ours
        accepted = set(inspect.signature(Client.connect).parameters) - {"self", "servers"}
        unknown = sorted(set(self.connect_options) - accepted)
        if unknown:
            raise ConfigError(
                f"{owner}: unknown option(s) {unknown} for NATS '{self.shown}'. Headrace's "
                f"own options are {sorted(known)}; any other is passed to nats.connect and "
                "must be one of its parameters (e.g. 'user_credentials', 'tls')."
            )
        stream = ours.get("stream")
        if stream is not None and not (isinstance(stream, str) and _NAME_RULE.fullmatch(stream)):
            raise ConfigError(
                f"{owner} option 'stream' must be a stream name without '.', '*', '>', "
                f"slashes or blanks, got {stream!r}"
            )
        self.stream: str | None = stream
        self.create_stream = bool(ours.get("create_stream", True))
        stream_config = ours.get("stream_config", {})
        if not isinstance(stream_config, Mapping):
            raise ConfigError(
                f"{owner} option 'stream_config' must be a mapping of StreamConfig fields, "
                f"got {stream_config!r}"
            )
        self.stream_config = dict(stream_config)
        self.key_header = str(ours.get("key_header", KEY_HEADER))
        if not _TOKEN.fullmatch(self.key_header):
            raise ConfigError(
                f"{owner} option 'key_header' must be a token, got {self.key_header!r}"
            )
        self.connect_timeout = self.number("connect_timeout", 2.0)
        self.request_timeout = self.number("request_timeout", 5.0)
        self.max_reconnect_attempts = int(self.number("max_reconnect_attempts", 60, floor=-1))
        self.reconnect_time_wait = self.number("reconnect_time_wait", 2.0)

    def number(self, name: str, default: float, *, floor: float = 0.0) -> float:
        value = self.options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < floor:
            raise ConfigError(
                f"{self.owner} option '{name}' must be a number >= {floor:g}, got {value!r}"
            )
        return float(value)

    def unavailable(self, exc: BaseException | str, *, doing: str) -> StreamUnavailableError:
        reason = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
        return StreamUnavailableError(
            f"NATS at {self.shown} is unreachable while {doing}: {reason}. "
            "Check that nats-server runs with JetStream (-js) and the URL is right; the "
            "next call tries again."
        )

    async def connect(self, *, where: str) -> Client:
        """A connection that reconnects on its own, but whose first attempt is bounded."""
        from nats.aio.client import Client

        shown = self.shown
        client = Client()

        async def on_error(exc: Exception) -> None:
            log.debug("%s: NATS %s: %s", where, shown, exc)

        async def on_disconnect() -> None:
            if not client.is_closed:  # also called when closing, which is no news
                log.warning("%s: lost the connection to NATS %s; reconnecting", where, shown)

        async def on_reconnect() -> None:
            log.info("%s: reconnected to NATS %s", where, shown)

        kwargs: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "max_reconnect_attempts": self.max_reconnect_attempts,
            "reconnect_time_wait": self.reconnect_time_wait,
            "error_cb": on_error,
            "disconnected_cb": on_disconnect,
            "reconnected_cb": on_reconnect,
            **self.connect_options,
        }
        try:
            await asyncio.wait_for(
                client.connect(servers=[self.url], **kwargs), self.connect_timeout
            )
        except Exception as exc:
            await _close_quietly(client)
            if isinstance(exc, TypeError | ValueError):
                raise ConfigError(f"{self.owner}: bad connection options: {exc}") from exc
            raise self.unavailable(exc, doing=f"connecting ({where})") from exc
        return client

    async def ensure_stream(self, js: JetStreamContext, *, where: str) -> str:
        """The name of the stream capturing the subject, created when allowed and missing."""
        from nats.js.api import StreamConfig
        from nats.js.errors import APIError, NotFoundError

        subject = self.subject
        name = self.stream
        if name is None:
            try:
                return await js.find_stream_name_by_subject(subject)
            except NotFoundError:
                name = _stream_name(subject)
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            info = None
        if info is not None:
            captured = info.config.subjects or []
            if not any(_subject_covers(pattern, subject) for pattern in captured):
                raise ConfigError(
                    f"{where}: stream '{name}' captures {captured}, not subject '{subject}'. "
                    "Name the right stream with the 'stream' option, or add the subject "
                    "to the stream."
                )
            return name
        if not self.create_stream:
            raise ConfigError(
                f"{where}: no JetStream stream captures subject '{subject}' on "
                f"{self.shown}, and 'create_stream' is off. Create one (nats stream add) "
                "or allow headrace to."
            )
        try:
            config = StreamConfig(name=name, subjects=[subject], **self.stream_config)
        except TypeError as exc:
            raise ConfigError(f"{where}: bad 'stream_config': {exc}") from exc
        try:
            await js.add_stream(config)
        except APIError as exc:
            raise ConfigError(
                f"{where}: cannot create stream '{name}' for subject '{subject}': {exc}. "
                "A subject may belong to one stream only: name it with the 'stream' option."
            ) from exc
        log.info("%s: created stream '%s' for subject '%s'", where, name, subject)
        return name


def _stream_name(subject: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", subject)


def _subject_covers(pattern: str, subject: str) -> bool:
    """Whether stream subject `pattern` (with ``*``/``>`` wildcards) captures `subject`."""
    have = subject.split(".")
    for i, part in enumerate(pattern.split(".")):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part != "*" and part != have[i]) or (part == "*" and have[i] == ">"):
            return False
    return len(have) == len(pattern.split("."))


async def _close_quietly(client: Client) -> None:
    try:
        await client.close()
    except Exception as exc:  # closing a half-open connection must not mask the cause
        log.debug("closing a NATS connection: %s", exc)
