"""`NatsSource`: a durable JetStream pull consumer named after the group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from headrace.errors import ConfigError, SourceError
from headrace.streams.base import Message, RevokeCallback
from headrace.streams.nats.connection import (
    _COMMON_OPTIONS,
    _NAME_RULE,
    _T,
    _close_quietly,
    _import_nats,
    _Loop,
    _Settings,
    _subject_covers,
    log,
)
from headrace.streams.nats.headers import _decode_headers

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext

__all__ = ["NatsSource"]

_CONSUMER_CHECK_S = 5.0  # how often an idle source checks that its consumer still exists

_SOURCE_OPTIONS = _COMMON_OPTIONS | {
    "ack_wait",
    "max_ack_pending",
    "max_deliver",
    "initial_position",
    "start",
}


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
