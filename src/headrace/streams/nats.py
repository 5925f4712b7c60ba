"""NATS JetStream: a source over a durable pull consumer and a sink that publishes.

nats-py speaks asyncio only, while `Source`/`Sink` are synchronous: each source and
sink runs a private event loop in a daemon thread and calls into it with
``asyncio.run_coroutine_threadsafe(...).result(timeout)``, so every call returns or
fails within a bound and the caller's thread never needs an event loop.

Streams: the topic is a subject. The stream that captures it is, in this order, the one
named by the ``stream`` option, the one the server reports for the subject, or a new one
named after the subject (every character outside ``[A-Za-z0-9_-]`` becomes ``_``, so
``payments.eu`` is kept in stream ``payments_eu``), created with ``stream_config``.

Messages: ``Message.offset`` is the stream sequence (an int), ``partition`` is 0,
``topic`` the message's subject and ``timestamp_ms`` the server's time of storage. The
key travels in the ``Headrace-Key`` header (option ``key_header``; ``Nats-*`` names are
the server's). Header names and values are kept in order; JetStream's own restrictions
are escaped so that any ``(str, bytes)`` pair round-trips:

* a name that is not an RFC 7230 token is percent-encoded (``my header`` ->
  ``my%20header``), as is ``%`` itself;
* a value that is not printable ASCII without surrounding blanks (NATS trims values
  and cannot carry line breaks; older nats-py drop non-ASCII headers) is sent as
  ``b64:<base64>``, as is one starting with ``b64:``.

NATS keeps one value per header name: when a record repeats a name, the last value wins
and a warning is logged.

Delivery: the consumer acknowledges explicitly. `NatsSource.commit` acknowledges and
waits for the server's confirmation of the last acknowledgement (the server applies the
acknowledgements of one connection in order), so a commit is durable when it returns.
Unacknowledged messages come again after ``ack_wait`` once their source stops polling
(a source that polls, paused or not, keeps its in-flight messages alive with ``+WPI``);
`NatsSource.close` gives them back at once (``-NAK``). An idle source checks every few
seconds that its consumer still exists and creates it again if it was deleted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import inspect
import logging
import re
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote

import orjson

from headrace.errors import (
    ConfigError,
    DependencyMissingError,
    SinkError,
    SourceError,
    StreamError,
    StreamUnavailableError,
)
from headrace.redaction import redact_url
from headrace.streams.base import Message, OutRecord, RevokeCallback

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext

__all__ = ["KEY_HEADER", "NatsSink", "NatsSource"]

log = logging.getLogger("headrace.streams.nats")

_T = TypeVar("_T")

KEY_HEADER = "Headrace-Key"
"""The header that carries `Message.key` / `OutRecord.key` (option ``key_header``)."""

_B64 = "b64:"
_TOKEN = re.compile(r"[!#$&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 tchar, without "%"
_TCHARS_QUOTED = "!#$&'*+^`|"  # tchars `quote` would otherwise escape
_NAME_RULE = re.compile(r"[^.*>\s/\\]+")  # stream and durable consumer names
_CONSUMER_CHECK_S = 5.0  # how often an idle source checks that its consumer still exists

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
_SOURCE_OPTIONS = _COMMON_OPTIONS | {
    "ack_wait",
    "max_ack_pending",
    "max_deliver",
    "initial_position",
    "start",
}
_SINK_OPTIONS = _COMMON_OPTIONS | {"ack_timeout", "dedupe_by_key"}


def _import_nats(feature: str) -> None:
    try:
        import nats  # noqa: F401
    except ImportError as exc:
        raise DependencyMissingError("nats-py", "nats", feature) from exc


# --- headers ---------------------------------------------------------------------------


def _encode_headers(
    headers: Sequence[tuple[str, bytes]], *, key: bytes | None, key_header: str, where: str
) -> dict[str, str] | None:
    """NATS headers for a record (see the module docstring for the escaping)."""
    if key is None and not headers:
        return None
    out: dict[str, str] = {}
    if key is not None:
        out[key_header] = _encode_value(key)
    for name, value in headers:
        wire = name if _TOKEN.fullmatch(name) else quote(name, safe=_TCHARS_QUOTED)
        if wire in out:
            log.warning(
                "%s: header '%s' appears more than once (or is the key header); NATS keeps "
                "one value per name, the last one",
                where,
                name,
            )
        out[wire] = _encode_value(value)
    return out


def _decode_headers(
    headers: Mapping[str, str] | None, *, key_header: str
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The key and the ``(name, value)`` headers of a received message."""
    if not headers:
        return None, []
    key: bytes | None = None
    out: list[tuple[str, bytes]] = []
    for wire, text in headers.items():
        if wire == key_header:
            key = _decode_value(text)
        else:
            out.append((unquote(wire) if "%" in wire else wire, _decode_value(text)))
    return key, out


def _encode_value(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    # ASCII only: nats-py before 2.11 or so parses headers as e-mail headers and drops
    # every header of a message with a non-ASCII value.
    if (
        text is not None
        and text.isascii()
        and text.isprintable()
        and text == text.strip()
        and not text.startswith(_B64)
    ):
        return text
    return _B64 + base64.b64encode(value).decode("ascii")


def _decode_value(text: str) -> bytes:
    if text.startswith(_B64):
        try:
            return base64.b64decode(text[len(_B64) :], validate=True)
        except (binascii.Error, ValueError):
            pass  # not ours: a foreign value that merely starts with "b64:"
    return text.encode("utf-8")


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


def _start_config(start: Any, *, owner: str) -> dict[str, Any]:
    """ConsumerConfig fields for a start position."""
    from nats.js.api import DeliverPolicy

    if start == "earliest":
        return {"deliver_policy": DeliverPolicy.ALL}
    if start == "latest":
        return {"deliver_policy": DeliverPolicy.NEW}
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ConfigError(f"{owner}: start time {start} has no time zone")
        from nats.js.api import ConsumerConfig

        # Newer nats-py convert a datetime themselves; older ones send the field as is.
        when: datetime | str = start
        if not hasattr(ConsumerConfig, "_to_utc_iso"):
            when = start.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": when}
    if isinstance(start, str) and start.isdigit():
        start = int(start)
    if isinstance(start, int) and not isinstance(start, bool) and start >= 1:
        return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start}
    raise ConfigError(
        f"{owner}: start {start!r} is not a position: use 'earliest', 'latest', a stream "
        "sequence (>= 1) or a datetime with a time zone"
    )


# --- source ----------------------------------------------------------------------------


class NatsSource:
    """Reads a JetStream subject through a durable pull consumer named after the group.

    Several sources with the same group share the consumer: each message goes to one.

    Parameters
    ----------
    url
        ``nats://[user:password@]host:port``.
    topic
        The subject (wildcards allowed).
    group
        The durable consumer's name (no ``.``, ``*``, ``>``, slashes or blanks).
    options
        Headrace's own options, below; any other key goes to ``nats.connect``.

        ``ack_wait``
            Seconds before an unacknowledged message is delivered again (default 30).
        ``max_ack_pending``
            Bound on messages delivered and not yet acknowledged, over all members of
            the group (default 10000).
        ``max_deliver``
            Deliveries of one message before the server gives up on it (default -1:
            never).
        ``initial_position``
            Where a consumer created here starts: ``"earliest"`` (default) or
            ``"latest"``.
        ``start``
            Replay: recreate the consumer at this position on `open`: a stream sequence,
            a datetime with a time zone, ``"earliest"`` or ``"latest"``.
        ``stream``, ``create_stream``, ``stream_config``
            The stream to read (default: found by subject or created, see the module
            docstring), whether to create it (default true), and `StreamConfig` fields
            for creating it (e.g. ``{"max_age": 86400, "storage": "memory"}``).
        ``key_header``
            The header that carries the key (default ``Headrace-Key``).
        ``connect_timeout``, ``request_timeout``
            Bounds on connecting (default 2 s) and on API calls and commits (5 s).
        ``max_reconnect_attempts``, ``reconnect_time_wait``
            The background reconnection: 60 attempts (-1: forever), 2 s apart.

    Raises
    ------
    DependencyMissingError
        When nats-py is not installed (``pip install 'headrace[nats]'``).
    ConfigError
        When an option has a wrong value.
    """

    def __init__(
        self,
        url: str,
        *,
        topic: str,
        group: str,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        owner = "NatsSource"
        _import_nats(owner)
        if not (group and _NAME_RULE.fullmatch(group)):
            raise ConfigError(
                f"{owner} group {group!r} cannot name a durable consumer: use letters, "
                "digits, '-' and '_' (no '.', '*', '>', slashes or blanks)"
            )
        self.url = url
        self.topic = topic
        self.group = group
        self._settings = settings = _Settings(
            url, topic, options, known=_SOURCE_OPTIONS, owner=owner
        )
        self._ack_wait = settings.number("ack_wait", 30.0)
        self._max_ack_pending = int(settings.number("max_ack_pending", 10_000, floor=1))
        self._max_deliver = int(settings.number("max_deliver", -1, floor=-1))
        position = settings.options.get("initial_position", "earliest")
        if position not in ("earliest", "latest"):
            raise ConfigError(
                f"{owner} option 'initial_position' must be 'earliest' or 'latest', "
                f"got {position!r}"
            )
        self._initial = _start_config(position, owner=owner)
        start = settings.options.get("start")
        self._start = None if start is None else _start_config(start, owner=owner)
        self._where = f"subject '{topic}' (consumer '{group}')"

        self._loop: _Loop | None = None
        self._client: Client | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stream = ""
        self._paused = False
        # Delivered, not acknowledged: stream sequence -> (delivery number, reply subject).
        self._inflight: dict[int, tuple[int, str]] = {}
        self._delivered = 0
        self._next_touch = 0.0
        self._next_check = 0.0

    # --- lifecycle --------------------------------------------------------------------

    def open(self, *, on_revoke: RevokeCallback | None = None) -> None:
        """Connect, make sure the stream and the durable consumer exist, and bind to it.

        JetStream hands out messages, not partitions, so `on_revoke` is never called.

        Raises
        ------
        StreamUnavailableError
            When the server cannot be reached or has no JetStream.
        ConfigError
            When the stream or consumer exists with a conflicting subject.
        """
        if self._loop is not None:
            return
        self._loop = _Loop(f"headrace-nats-{self.group}")
        try:
            self._run(self._connect(replay=True), what="connecting")  # remembers the client
        except BaseException:
            self._loop.stop()
            self._loop = None
            raise

    def close(self) -> None:
        """Give unacknowledged messages back (``-NAK``), unsubscribe and disconnect."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run(self._shutdown(), timeout=self._settings.request_timeout + 5, what="closing")
        except Exception as exc:  # the server may be gone: ack_wait redelivers them anyway
            log.warning("%s: closing: %s", self._where, exc)
        finally:
            self._inflight.clear()
            loop.stop()

    def pause(self) -> None:
        """Stop fetching; `poll` returns nothing until `resume`."""
        self._paused = True

    def resume(self) -> None:
        """Fetch again after `pause`."""
        self._paused = False

    # --- reading and acknowledging ----------------------------------------------------

    def poll(self, *, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages` messages, waiting at most `timeout` seconds for them.

        Raises
        ------
        StreamUnavailableError
            When the server is unreachable (poll again later: the source reconnects).
        SourceError
            When JetStream refuses the fetch (e.g. the consumer was deleted).
        """
        timeout = max(timeout, 0.0)
        if max_messages <= 0:
            return []
        if self._paused:
            self._run(self._touch_inflight(), what="keeping in-flight messages")
            time.sleep(timeout)
            return []
        return self._run(
            self._fetch(max_messages, timeout),
            what="fetching",
            timeout=timeout + self._settings.connect_timeout + self._settings.request_timeout + 5,
        )

    def commit(self, messages: Sequence[Message]) -> None:
        """Acknowledge these messages and every message delivered before them.

        Returns once the server confirmed the last acknowledgement (a durable commit).

        Raises
        ------
        StreamUnavailableError
            When the server cannot be reached (the messages come again after ack_wait).
        SourceError
            When a message was not read by this source.
        """
        if not messages:
            return
        last = 0
        wanted: list[int] = []
        for message in messages:
            offset = message.offset
            if not isinstance(offset, int) or offset not in self._inflight:
                if isinstance(offset, int) and _subject_covers(self.topic, message.topic):
                    continue  # acknowledged already (committed twice): nothing to do
                raise SourceError(
                    f"Cannot commit {message.position} on {self._where}: it was not read by "
                    "this source. Commit each message on the source that read it."
                )
            wanted.append(offset)
            last = max(last, self._inflight[offset][0])
        if not wanted:
            return
        todo = [seq for seq, (number, _) in self._inflight.items() if number <= last]
        replies = [self._inflight[seq][1] for seq in todo]
        self._run(self._ack(replies), what=f"acknowledging {len(todo)} messages on")
        for seq in todo:
            self._inflight.pop(seq, None)

    # --- coroutines on the private loop -----------------------------------------------

    async def _connect(self, *, replay: bool) -> tuple[Client, JetStreamContext.PullSubscription]:
        """Connect, set up the stream and the consumer, bind; remember and return them."""
        from nats.js.api import AckPolicy, ConsumerConfig
        from nats.js.errors import APIError, NotFoundError

        settings = self._settings
        client = await settings.connect(where=self._where)
        try:
            js = client.jetstream(timeout=settings.request_timeout)
            stream = await settings.ensure_stream(js, where=self._where)
            try:
                info = await js.consumer_info(stream, self.group)
            except NotFoundError:
                info = None
            if info is not None and replay and self._start is not None:
                await js.delete_consumer(stream, self.group)
                log.info("%s: consumer deleted for a replay from %s", self._where, self._start)
                info = None
            if info is None:
                config = ConsumerConfig(
                    durable_name=self.group,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self._ack_wait,
                    max_ack_pending=self._max_ack_pending,
                    max_deliver=self._max_deliver,
                    filter_subject=self.topic,
                    **(self._start if replay and self._start else self._initial),
                )
                await js.add_consumer(stream, config)
            else:
                await self._update_consumer(js, stream, info.config)
            sub = await js.pull_subscribe_bind(durable=self.group, stream=stream)
        except APIError as exc:
            await _close_quietly(client)
            if exc.code == 503:
                raise settings.unavailable(exc, doing=f"setting up {self._where}") from exc
            raise SourceError(
                f"NATS at {settings.shown} refused to set up {self._where}: {exc}"
            ) from exc
        except BaseException:
            await _close_quietly(client)
            raise
        self._client, self._sub, self._stream = client, sub, stream
        return client, sub

    async def _update_consumer(self, js: JetStreamContext, stream: str, config: Any) -> None:
        from nats.js.errors import APIError

        # `filter_subjects` (several filters) came with nats-py 2.7 and nats-server 2.10.
        filters = getattr(config, "filter_subjects", None)
        if config.filter_subject not in (None, self.topic) or filters:
            raise ConfigError(
                f"{self._where}: consumer '{self.group}' of stream '{stream}' already reads "
                f"{filters or config.filter_subject!r}; pick another group name for this "
                "subject."
            )
        wanted = {
            "ack_wait": self._ack_wait,
            "max_ack_pending": self._max_ack_pending,
            "max_deliver": self._max_deliver,
        }
        if all(getattr(config, k) == v for k, v in wanted.items()):
            return
        for name, value in wanted.items():
            setattr(config, name, value)
        try:
            await js.add_consumer(stream, config)
        except APIError as exc:  # an older server may not edit consumers: keep it as is
            log.warning("%s: could not update consumer settings: %s", self._where, exc)

    async def _ready(self, timeout: float) -> tuple[Client, JetStreamContext.PullSubscription]:
        """The connection, reconnected if it was given up; waits up to `timeout` for it."""
        client, sub = self._client, self._sub
        if client is None or sub is None or client.is_closed:
            self._client = self._sub = None
            if client is not None:
                log.info("%s: reconnection was given up; connecting afresh", self._where)
                await _close_quietly(client)
            return await self._connect(replay=False)
        deadline = time.monotonic() + timeout
        while not client.is_connected:
            if time.monotonic() >= deadline:
                raise self._settings.unavailable(
                    "disconnected, reconnecting", doing=f"reading {self._where}"
                )
            await asyncio.sleep(0.05)
        return client, sub

    async def _fetch(self, count: int, timeout: float) -> list[Message]:
        import nats.errors
        import nats.js.errors

        client, sub = await self._ready(timeout)
        await self._touch_inflight()
        try:
            raw = await sub.fetch(batch=count, timeout=max(timeout, 0.01))
        except TimeoutError:  # nats.errors.TimeoutError, or asyncio's near the deadline
            raw = []
        except nats.js.errors.APIError as exc:
            if exc.code == 503:
                raise self._settings.unavailable(exc, doing=f"reading {self._where}") from exc
            raise SourceError(
                f"NATS at {self._settings.shown} refused a fetch on {self._where}: {exc}. "
                "If the consumer was deleted, reopen the source to recreate it."
            ) from exc
        except (nats.errors.ConnectionClosedError, OSError) as exc:
            raise self._settings.unavailable(exc, doing=f"reading {self._where}") from exc
        if not raw:
            if not client.is_connected:
                raise self._settings.unavailable(
                    "disconnected, reconnecting", doing=f"reading {self._where}"
                )
            await self._check_consumer(client)
            return []
        key_header = self._settings.key_header
        messages = []
        for msg in raw:
            metadata = msg.metadata
            seq = metadata.sequence.stream
            key, headers = _decode_headers(msg.headers, key_header=key_header)
            self._delivered += 1
            # Re-inserted at the end: the dict's order is the delivery order.
            self._inflight.pop(seq, None)
            self._inflight[seq] = (self._delivered, msg.reply)
            messages.append(
                Message(
                    value=msg.data,
                    topic=msg.subject,
                    partition=0,
                    offset=seq,
                    key=key,
                    headers=headers,
                    timestamp_ms=int(metadata.timestamp.timestamp() * 1000),
                )
            )
        return messages

    async def _check_consumer(self, client: Client) -> None:
        """Recreate the consumer if it vanished (a fetch from a deleted one just waits)."""
        import nats.errors
        from nats.js.errors import NotFoundError

        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _CONSUMER_CHECK_S
        try:
            await client.jetstream(timeout=self._settings.request_timeout).consumer_info(
                self._stream, self.group
            )
            return
        except NotFoundError:
            pass
        except nats.errors.Error as exc:  # only a check: the next one may get through
            log.debug("%s: checking the consumer: %s", self._where, exc)
            return
        log.warning(
            "%s: the consumer (or its stream '%s') was deleted; creating it again (its "
            "%d unacknowledged messages come again from the new one)",
            self._where,
            self._stream,
            len(self._inflight),
        )
        self._inflight.clear()
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()
        self._client = None
        await _close_quietly(client)
        await self._connect(replay=False)

    async def _touch_inflight(self) -> None:
        """Tell the server we still work on in-flight messages (``+WPI``)."""
        client = self._client
        if not self._inflight or client is None or not client.is_connected:
            return
        now = time.monotonic()
        if now < self._next_touch:
            return
        self._next_touch = now + self._ack_wait / 3
        for _, reply in self._inflight.values():
            await client.publish(reply, b"+WPI")

    async def _ack(self, replies: list[str]) -> None:
        import nats.errors

        client = self._client
        doing = f"acknowledging on {self._where}"
        if client is None or not client.is_connected:
            raise self._settings.unavailable("not connected", doing=doing)
        try:
            for reply in replies[:-1]:
                await client.publish(reply, b"+ACK")
            # The confirmation of the last one: acks of one connection apply in order.
            await client.request(replies[-1], b"+ACK", timeout=self._settings.request_timeout)
        except (nats.errors.Error, OSError) as exc:
            raise self._settings.unavailable(exc, doing=doing) from exc

    async def _shutdown(self) -> None:
        client, sub = self._client, self._sub
        self._client = self._sub = None
        if client is None:
            return
        try:
            if sub is not None and client.is_connected:
                # Unsubscribe first, so the given-back messages cannot land here again.
                await sub.unsubscribe()
            if self._inflight and client.is_connected:
                for _, reply in self._inflight.values():
                    await client.publish(reply, b"-NAK")
                await client.flush(timeout=max(int(self._settings.request_timeout), 1))
                log.info("%s: gave %d messages back", self._where, len(self._inflight))
        finally:
            await _close_quietly(client)

    def _run(self, coro: Coroutine[Any, Any, _T], *, what: str, timeout: float | None = None) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise SourceError(f"{self._where}: the source is not open; call open() first")
        settings = self._settings
        limit = timeout or settings.connect_timeout + 2 * settings.request_timeout + 5
        return loop.run(coro, timeout=limit, what=f"NATS {settings.shown}: {what} {self._where}")


# --- sink ------------------------------------------------------------------------------


class _Acks:
    """The JetStream acks awaited for the records of one `NatsSink.send` call."""

    __slots__ = ("done", "expected", "failures", "received", "seen")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.seen = bytearray(expected)  # 1 where the ack of that record arrived
        self.failures: list[tuple[int, str]] = []
        self.done = asyncio.Event()


class NatsSink:
    """Publishes records to a JetStream subject; `flush` waits for every ack.

    Acks come back on one wildcard inbox per sink instead of one request per record,
    which is about four times faster than nats-py's ``js.publish``.

    Parameters
    ----------
    url
        ``nats://[user:password@]host:port``.
    topic
        The subject to publish to (no wildcards).
    options
        Headrace's own options, below; any other key goes to ``nats.connect``.

        ``ack_timeout``
            Seconds to wait for the acks of one `send` (default 5).
        ``dedupe_by_key``
            Also send the key as ``Nats-Msg-Id``, so the server drops a record whose key
            it saw within the stream's duplicate window (default off; turn it on only
            for outputs whose key is an idempotency key, never for dead letters).
        ``stream``, ``create_stream``, ``stream_config``, ``key_header``
            As for `NatsSource`.
        ``connect_timeout``, ``request_timeout``
            As for `NatsSource`.
        ``max_reconnect_attempts``, ``reconnect_time_wait``
            As for `NatsSource`.

    Raises
    ------
    DependencyMissingError
        When nats-py is not installed (``pip install 'headrace[nats]'``).
    ConfigError
        When an option has a wrong value or the subject has wildcards.
    """

    def __init__(self, url: str, *, topic: str, options: Mapping[str, Any] | None = None) -> None:
        owner = "NatsSink"
        _import_nats(owner)
        if topic and ("*" in topic.split(".") or ">" in topic.split(".")):
            raise ConfigError(f"{owner} cannot publish to wildcard subject {topic!r}")
        self.url = url
        self.topic = topic
        self._settings = settings = _Settings(url, topic, options, known=_SINK_OPTIONS, owner=owner)
        self._ack_timeout = settings.number("ack_timeout", 5.0)
        self._dedupe = bool(settings.options.get("dedupe_by_key", False))
        self._where = f"subject '{topic}'"
        self._loop: _Loop | None = None
        self._pending: list[concurrent.futures.Future[tuple[int, list[tuple[int, str]]]]] = []
        # Owned by the event loop's thread:
        self._client: Client | None = None
        self._inbox = ""
        self._batches: dict[int, _Acks] = {}
        self._batch_ids = 0
        self._order: asyncio.Lock | None = None
        self._stream_missing = False

    def open(self) -> None:
        """Connect and make sure a stream captures the subject.

        Raises
        ------
        StreamUnavailableError
            When the server cannot be reached.
        ConfigError
            When no stream captures the subject and ``create_stream`` is off.
        """
        if self._loop is not None:
            return
        loop = _Loop("headrace-nats-sink")
        settings = self._settings
        try:
            loop.run(
                self._connect(),
                timeout=settings.connect_timeout + 2 * settings.request_timeout + 5,
                what=f"NATS {settings.shown}: connecting {self._where}",
            )
        except BaseException:
            loop.stop()
            raise
        self._loop = loop

    def send(self, records: Sequence[OutRecord]) -> None:
        """Publish the records (in order) without waiting for their acks."""
        loop = self._loop
        if loop is None:
            raise SinkError(f"{self._where}: the sink is not open; call open() first")
        if not records:
            return
        items = []
        key_header = self._settings.key_header
        for record in records:
            headers = _encode_headers(
                record.headers, key=record.key, key_header=key_header, where=self._where
            )
            if self._dedupe and record.key is not None and headers is not None:
                headers["Nats-Msg-Id"] = headers[key_header]
            items.append((record.value, headers))
        self._pending.append(loop.submit(self._publish(items)))

    def flush(self, *, timeout: float) -> None:
        """Wait until every record sent so far is acknowledged by the stream.

        Raises
        ------
        SinkError
            When a record was refused or not acknowledged (within ``ack_timeout`` of its
            `send`, or within `timeout`); the records may be partly stored: the caller
            redelivers them (at-least-once).
        """
        pending, self._pending = self._pending, []
        deadline = time.monotonic() + max(timeout, 0.0)
        total = 0
        failures: list[tuple[int, str]] = []
        for index, future in enumerate(pending):
            try:
                sent, failed = future.result(max(deadline - time.monotonic(), 0.0))
            except concurrent.futures.TimeoutError:
                for rest in pending[index:]:
                    rest.cancel()
                raise SinkError(
                    f"NATS at {self._settings.shown}: records to {self._where} were not all "
                    f"acknowledged within {timeout:.1f}s. Is the server reachable and a "
                    "stream capturing the subject?"
                ) from None
            except StreamError as exc:  # could not publish at all
                for rest in pending[index + 1 :]:
                    rest.cancel()
                raise SinkError(str(exc)) from exc
            failures += [(total + i, reason) for i, reason in failed]
            total += sent
        if failures:
            index, reason = failures[0]
            raise SinkError(
                f"NATS at {self._settings.shown} did not store {len(failures)} of {total} "
                f"records to {self._where} (first: record {index}: {reason})"
            )

    def close(self) -> None:
        """Flush what is pending (best effort) and disconnect."""
        loop = self._loop
        if loop is None:
            return
        try:
            self.flush(timeout=self._ack_timeout + 1)
        except SinkError as exc:
            log.warning("%s: records lost on close: %s", self._where, exc)
        finally:
            self._loop = None
            try:
                loop.run(self._disconnect(), timeout=10, what="closing")
            except StreamError as exc:
                log.warning("%s: closing: %s", self._where, exc)
            loop.stop()

    # --- coroutines on the private loop -----------------------------------------------

    async def _connect(self) -> Client:
        settings = self._settings
        client = await settings.connect(where=self._where)
        try:
            js = client.jetstream(timeout=settings.request_timeout)
            await settings.ensure_stream(js, where=self._where)
            inbox = client.new_inbox()
            await client.subscribe(f"{inbox}.*.*", cb=self._on_ack)
        except BaseException:
            await _close_quietly(client)
            raise
        self._client, self._inbox = client, inbox
        return client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)

    async def _publish(
        self, items: list[tuple[bytes, dict[str, str] | None]]
    ) -> tuple[int, list[tuple[int, str]]]:
        """Publish `items` in order and wait for their acks: (count, [(index, reason)])."""
        import nats.errors

        if self._order is None:
            self._order = asyncio.Lock()
        self._batch_ids += 1
        batch = self._batch_ids
        acks = _Acks(len(items))
        self._batches[batch] = acks
        try:
            # Sends queued before this one go out first (the lock is fair), so records
            # keep the order of the `send` calls.
            async with self._order:
                client = self._client
                if client is None or client.is_closed:
                    # nats-py gave up reconnecting (max_reconnect_attempts): start afresh.
                    if client is not None:
                        log.info("%s: reconnection was given up; connecting afresh", self._where)
                        await _close_quietly(client)
                    client = await self._connect()
                elif self._stream_missing and self._settings.create_stream:
                    self._stream_missing = False
                    js = client.jetstream(timeout=self._settings.request_timeout)
                    await self._settings.ensure_stream(js, where=self._where)
                prefix = f"{self._inbox}.{batch}."
                try:
                    for index, (value, headers) in enumerate(items):
                        await client.publish(
                            self.topic, value, reply=f"{prefix}{index}", headers=headers
                        )
                except (nats.errors.Error, OSError) as exc:
                    doing = f"publishing to {self._where}"
                    raise self._settings.unavailable(exc, doing=doing) from exc
            try:
                await asyncio.wait_for(acks.done.wait(), self._ack_timeout)
            except TimeoutError:
                reason = f"no ack within {self._ack_timeout:.1f}s (server unreachable or slow)"
                missing = [(i, reason) for i, seen in enumerate(acks.seen) if not seen]
                return len(items), sorted([*acks.failures, *missing])
            return len(items), acks.failures
        finally:
            del self._batches[batch]

    async def _on_ack(self, msg: Any) -> None:
        batch, _, index = msg.subject.rpartition(".")
        acks = self._batches.get(int(batch.rpartition(".")[2]))
        if acks is None:
            return  # a late ack of a send that was given up
        position = int(index)
        if position >= acks.expected or acks.seen[position]:
            return
        acks.seen[position] = 1
        data: bytes = msg.data
        if not data:  # a status message: 503 means no stream captures the subject
            status = (msg.headers or {}).get("Status", "?")
            self._stream_missing = True
            acks.failures.append(
                (
                    position,
                    f"no JetStream stream answered (status {status}): was the stream deleted? "
                    "The next send creates it again (unless 'create_stream' is off)",
                )
            )
        elif b'"error"' in data:
            try:
                error = orjson.loads(data).get("error", {})
                reason = f"{error.get('description', data.decode())} (code {error.get('err_code')})"
            except orjson.JSONDecodeError:
                reason = data.decode("utf-8", "replace")
            acks.failures.append((position, reason))
        acks.received += 1
        if acks.received >= acks.expected:
            acks.done.set()
