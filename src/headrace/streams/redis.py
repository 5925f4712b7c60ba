"""Redis Streams: a source over a consumer group and a sink that appends entries.

Wire format (one stream entry per message, binary-safe field/value pairs)::

    value   -> the message bytes                      (field name: option ``value_field``)
    key     -> the message key, absent when None      (option ``key_field``)
    h:NAME  -> one field per header, in order, repeats allowed (prefix: ``header_prefix``)

Fields written by other producers that are neither the value nor the key become headers
under their own names; an entry without a value field arrives with an empty value (the
pipeline dead-letters it with every field kept), never silently dropped.

Consumer groups are Redis's unit of sharing: every member reads new entries (``>``),
each entry goes to one member and stays in that member's pending list (PEL) until it is
acknowledged (`RedisStreamSource.commit` = ``XACK``). Redis has no rebalance; instead:

* a restarted member re-reads its own pending entries first (give it a stable name with
  the ``consumer`` option, e.g. the pod name, for this to apply);
* members claim entries that sat unacknowledged longer than ``claim_idle_ms`` in anyone's
  PEL (``XAUTOCLAIM``), so the events of a crashed member are not stuck. A member that
  keeps polling (paused or not) keeps its own in-flight entries fresh, so entries held
  across polls are not taken from it; one batch must still finish within
  ``claim_idle_ms``, or another member processes it too (at-least-once);
* `RedisStreamSource.close` hands its unacknowledged entries back (marks them idle at
  once), so the next member picks them up without waiting for ``claim_idle_ms``.

``Message.offset`` is the entry id (``"1700000000000-0"``), ``partition`` is 0, ``topic``
is the stream key and ``timestamp_ms`` the id's time part (the server's clock at ``XADD``).
Needs Redis 6.2 or later (``XAUTOCLAIM``).
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn, Protocol, cast

from headrace.errors import (
    ConfigError,
    DependencyMissingError,
    SinkError,
    SourceError,
    StreamUnavailableError,
)
from headrace.redaction import redact_url
from headrace.streams.base import Message, OutRecord, RevokeCallback

__all__ = ["RedisStreamSink", "RedisStreamSource"]

log = logging.getLogger("headrace.streams.redis")

_TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000
_ACK_CHUNK = 1000

# Options headrace reads itself; everything else goes to `redis.Redis.from_url`.
_SOURCE_OPTIONS = frozenset(
    {
        "value_field",
        "key_field",
        "header_prefix",
        "consumer",
        "start",
        "initial_position",
        "claim_idle_ms",
        "claim_interval_ms",
        "reap_idle_ms",
        "socket_timeout",
        "socket_connect_timeout",
        "retries",
    }
)
_SINK_OPTIONS = frozenset(
    {
        "value_field",
        "key_field",
        "header_prefix",
        "maxlen",
        "approximate",
        "max_buffer",
        "socket_timeout",
        "socket_connect_timeout",
        "retries",
    }
)

# Deletes a consumer only when it holds no pending entry, atomically: deleting one that
# holds entries would drop them from the PEL, i.e. lose them.
_REAP_SCRIPT = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


class _Pipeline(Protocol):
    """The slice of redis-py's pipeline used here (its `execute_command` is untyped)."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...

    def execute(self, raise_on_error: bool = True) -> list[Any]: ...

    def reset(self) -> None: ...


class _Client(Protocol):
    """The slice of ``redis.Redis`` used here."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...

    def pipeline(self, transaction: bool = True) -> Any: ...

    def ping(self) -> Any: ...

    def register_script(self, script: str) -> Any: ...

    def close(self) -> None: ...

    @property
    def connection_pool(self) -> Any: ...


def _close(client: _Client) -> None:
    """Close the client and its pool's sockets (redis-py 5.0's `close` leaves them open)."""
    client.close()
    client.connection_pool.disconnect()


def _import_redis(feature: str) -> Any:
    try:
        import redis
    except ImportError as exc:
        raise DependencyMissingError("redis", "redis", feature) from exc
    return redis


def _client_errors() -> tuple[type[BaseException], ...]:
    """What a Redis call raises when the server or the network fails it."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


def _positive(options: Mapping[str, Any], name: str, default: float, *, owner: str) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{owner} option '{name}' must be a number >= 0, got {value!r}")
    return float(value)


def _split_options(
    options: Mapping[str, Any] | None, known: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Headrace's own options and the rest (for the redis client)."""
    ours: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for name, value in (options or {}).items():
        (ours if name in known else client)[name] = value
    return ours, client


def _check_client_options(
    url: str, extra: Mapping[str, Any], *, known: frozenset[str], owner: str
) -> None:
    """Refuse options redis-py would take silently and fail on at the first connection."""
    redis_mod = _import_redis(owner)
    accepted = inspect.signature(redis_mod.Redis.__init__).parameters
    unknown = sorted(set(extra) - set(accepted) - {"self"})
    if unknown:
        raise ConfigError(
            f"{owner}: unknown option(s) {unknown} for Redis '{redact_url(url)}'. "
            f"Headrace's own options are {sorted(known)}; any other is passed to redis.Redis "
            "and must be one of its parameters (e.g. 'ssl_ca_certs', 'username')."
        )


def _make_client(
    url: str, ours: Mapping[str, Any], extra: Mapping[str, Any], *, owner: str
) -> _Client:
    """A client whose every failure surfaces within bounded time (timeouts, few retries)."""
    redis_mod = _import_redis(owner)
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    retries = int(_positive(ours, "retries", 1, owner=owner))
    kwargs: dict[str, Any] = {
        "socket_timeout": _positive(ours, "socket_timeout", 5.0, owner=owner),
        "socket_connect_timeout": _positive(ours, "socket_connect_timeout", 2.0, owner=owner),
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
        **extra,
        # The raw replies are parsed here (RESP2 shapes, duplicate fields kept).
        "protocol": 2,
        "decode_responses": False,
    }
    try:
        raw_client = redis_mod.Redis.from_url(url, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{owner}: cannot use Redis URL '{redact_url(url)}' with options "
            f"{sorted(extra)}: {exc}. Use redis://[:password@]host:port/db; options other "
            f"than headrace's own are passed to redis.Redis."
        ) from exc
    for command in ("XREADGROUP", "XAUTOCLAIM", "XCLAIM", "XPENDING", "XRANGE", "XINFO"):
        raw_client.set_response_callback(command, _raw)
    return cast(_Client, raw_client)


def _raw(response: Any, **_: Any) -> Any:
    return response


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw


class _Codec:
    """Between `Message`/`OutRecord` and a stream entry's field/value pairs."""

    def __init__(self, ours: Mapping[str, Any], *, owner: str) -> None:
        self.value_field = str(ours.get("value_field", "value")).encode()
        self.key_field = str(ours.get("key_field", "key")).encode()
        self.header_prefix = str(ours.get("header_prefix", "h:"))
        if self.value_field == self.key_field or not self.header_prefix:
            raise ConfigError(
                f"{owner}: 'value_field' and 'key_field' must differ and 'header_prefix' "
                f"must not be empty (got {ours!r})"
            )
        self._prefix_bytes = self.header_prefix.encode()

    def fields(self, record: OutRecord) -> list[bytes]:
        out = [self.value_field, record.value]
        if record.key is not None:
            out += [self.key_field, record.key]
        for name, value in record.headers:
            out += [self._prefix_bytes + name.encode("utf-8", "surrogateescape"), value]
        return out

    def message(self, stream: str, entry_id: bytes, fields: list[bytes]) -> Message:
        value = b""
        key: bytes | None = None
        headers: list[tuple[str, bytes]] = []
        for i in range(0, len(fields) - 1, 2):
            name, data = fields[i], fields[i + 1]
            if name == self.value_field:
                value = data
            elif name == self.key_field:
                key = data
            elif name.startswith(self._prefix_bytes):
                headers.append((_text(name[len(self._prefix_bytes) :]), data))
            else:
                headers.append((_text(name), data))
        offset = entry_id.decode()
        return Message(
            value=value,
            topic=stream,
            partition=0,
            offset=offset,
            key=key,
            headers=headers,
            timestamp_ms=int(offset.split("-", 1)[0]),
        )


def _start_id(start: Any, *, owner: str) -> str:
    """The group position (last delivered id) that makes `start` the next entry read."""
    if start in ("earliest", "0", 0):
        return "0"
    if start in ("latest", "$"):
        return "$"
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ConfigError(f"{owner}: start time {start} has no time zone")
        ms = int(start.timestamp() * 1000)
    elif isinstance(start, int) and not isinstance(start, bool):
        ms = start
    elif isinstance(start, str) and start.partition("-")[0].isdigit():
        ms_text, _, seq_text = start.partition("-")
        if seq_text and not seq_text.isdigit():
            raise ConfigError(f"{owner}: start {start!r} is not a stream entry id")
        ms, seq = int(ms_text), int(seq_text or 0)
        if seq > 0:
            return f"{ms}-{seq - 1}"
    else:
        raise ConfigError(
            f"{owner}: start {start!r} is not a position: use 'earliest', 'latest', an entry "
            "id like '1700000000000-0', epoch milliseconds or a datetime"
        )
    # Just before `ms-0`, so the entry at the position itself is read again.
    return "0" if ms <= 0 else f"{ms - 1}-18446744073709551615"


class RedisStreamSource:
    """Reads a Redis stream as one member of a consumer group.

    Parameters
    ----------
    url
        ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
    topic
        The stream key.
    group
        The consumer group; created (with the stream) on `open` when missing.
    options
        Headrace's own options, below; any other key goes to ``redis.Redis.from_url``.

        ``consumer``
            This member's name; default ``<host>-<pid>-<random>``, unique per process.
            A stable name (the pod name) lets a restart re-read its own pending entries
            at once instead of waiting for another member to claim them.
        ``initial_position``
            Where a group created here starts: ``"earliest"`` (default: the backlog
            too) or ``"latest"`` (only entries added from now on).
        ``start``
            Replay: move the group to this position on `open`, even if it exists; an
            entry id (inclusive), epoch milliseconds, a datetime with a time zone,
            ``"earliest"`` or ``"latest"``.
        ``claim_idle_ms``
            Claim entries left unacknowledged this long in any member's pending list
            (default 30000; 0 disables claiming). Keep it above the longest batch.
        ``claim_interval_ms``
            How often to look for such entries (default: half of ``claim_idle_ms``,
            between 0.1 s and 10 s).
        ``reap_idle_ms``
            Delete members idle this long that hold no pending entry (default one hour;
            0 disables), so the group does not collect the names of dead processes.
        ``value_field``, ``key_field``, ``header_prefix``
            The entry layout (default ``value``, ``key``, ``h:``).
        ``socket_timeout``, ``socket_connect_timeout``, ``retries``
            Bounds on every call (default 5 s, 2 s, 1 retry).

    Raises
    ------
    DependencyMissingError
        When redis-py is not installed (``pip install 'headrace[redis]'``).
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
        owner = "RedisStreamSource"
        _import_redis(owner)
        if not topic or not group:
            raise ConfigError(
                f"{owner} needs a stream key and a group, got topic={topic!r}, group={group!r}"
            )
        self.url = url
        self.topic = topic
        self.group = group
        ours, self._client_options = _split_options(options, _SOURCE_OPTIONS)
        _check_client_options(url, self._client_options, known=_SOURCE_OPTIONS, owner=owner)
        self._options = ours
        self._codec = _Codec(ours, owner=owner)
        self.consumer = str(
            ours.get("consumer") or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        position = ours.get("initial_position", "earliest")
        if position not in ("earliest", "latest"):
            raise ConfigError(
                f"{owner} option 'initial_position' must be 'earliest' or 'latest', "
                f"got {position!r}"
            )
        self._initial_id = "0" if position == "earliest" else "$"
        self._start = ours.get("start")
        if self._start is not None:
            _start_id(self._start, owner=owner)  # fail now, not at open
        self._claim_idle_ms = int(_positive(ours, "claim_idle_ms", 30_000, owner=owner))
        default_interval = min(max(self._claim_idle_ms / 2, 100), 10_000)
        self._claim_interval_s = (
            _positive(ours, "claim_interval_ms", default_interval, owner=owner) / 1000
        )
        self._reap_idle_ms = int(_positive(ours, "reap_idle_ms", 3_600_000, owner=owner))
        socket_timeout = _positive(ours, "socket_timeout", 5.0, owner=owner)
        # A BLOCK must end before the socket timeout, or the read would fail.
        self._max_block_s = max(socket_timeout / 2, 0.05)
        self._where = f"stream '{topic}' (group '{group}', consumer '{self.consumer}')"

        self._client: _Client | None = None
        self._paused = False
        self._pending_cursor: str | None = "0"
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_touch = 0.0
        # Delivered, not yet acknowledged: entry id -> delivery number (delivery order).
        self._inflight: dict[str, int] = {}
        self._delivered = 0
        self._reaper: Any = None

    # --- lifecycle --------------------------------------------------------------------

    def open(self, *, on_revoke: RevokeCallback | None = None) -> None:
        """Connect and join the group (creating the stream and group when missing).

        Redis hands out entries, not partitions, so `on_revoke` is never called.

        Raises
        ------
        StreamUnavailableError
            When the server cannot be reached.
        """
        if self._client is not None:
            return
        client = _make_client(
            self.url, self._options, self._client_options, owner="RedisStreamSource"
        )
        self._client = client
        try:
            self._ensure_group(client)
            if self._start is not None:
                position = _start_id(self._start, owner="RedisStreamSource")
                client.execute_command("XGROUP", "SETID", self.topic, self.group, position)
                log.info("%s: group moved to %s (replay)", self._where, position)
        except Exception:
            self._client = None
            _close(client)
            raise
        self._pending_cursor = "0"
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    def close(self) -> None:
        """Hand unacknowledged entries back to the group and disconnect (best effort).

        The entries stay pending (nothing is acknowledged) but are marked idle, so the
        next member's claim picks them up at once.
        """
        client, self._client = self._client, None
        if client is None:
            return
        try:
            self._hand_back(client)
        except Exception as exc:  # the server may be gone: claims will find them later
            log.warning("%s: could not hand back pending entries: %s", self._where, exc)
        finally:
            self._inflight.clear()
            _close(client)

    def pause(self) -> None:
        """Stop reading; `poll` returns nothing until `resume`."""
        self._paused = True

    def resume(self) -> None:
        """Read again after `pause`."""
        self._paused = False

    # --- reading ----------------------------------------------------------------------

    def poll(self, *, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages` entries: own pending ones first, then claimed, then new.

        Raises
        ------
        StreamUnavailableError
            When the server cannot be reached (poll again later: the source recovers).
        SourceError
            When Redis refuses a read.
        """
        client = self._require_open()
        if max_messages <= 0:
            return []
        errors = _client_errors()
        try:
            if self._paused:
                self._keep_inflight(client)
                time.sleep(max(timeout, 0.0))
                return []
            return self._poll(client, max_messages, timeout)
        except errors as exc:
            if not _is_nogroup(exc):
                self._fail(exc, doing="reading")
        # The group vanished (a server restarted without persistence, or someone ran
        # XGROUP DESTROY): recreate it and read again rather than stop the pipeline.
        log.warning("%s: consumer group missing; recreating it", self._where)
        try:
            self._ensure_group(client)
            self._pending_cursor = "0"
            self._claim_cursor = "0-0"
            return self._poll(client, max_messages, timeout)
        except errors as exc:
            self._fail(exc, doing="reading")

    def _poll(self, client: _Client, count: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + max(timeout, 0.0)
        while self._pending_cursor is not None:
            reply = client.execute_command(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                "STREAMS", self.topic, self._pending_cursor,
            )  # fmt: skip
            entries = _entries(reply)
            if not entries:
                self._pending_cursor = None
                break
            self._pending_cursor = entries[-1][0].decode()
            messages = self._deliver(client, entries)
            if messages:
                log.info("%s: re-read %d own pending entries", self._where, len(messages))
                return messages
        self._keep_inflight(client)
        if self._claim_idle_ms > 0 and time.monotonic() >= self._next_claim:
            claimed = self._claim(client, count)
            if claimed:
                return claimed
        while True:
            remaining = deadline - time.monotonic()
            block = ["BLOCK", max(int(min(remaining, self._max_block_s) * 1000), 1)]
            reply = client.execute_command(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                *(block if remaining > 0.001 else []), "STREAMS", self.topic, ">",
            )  # fmt: skip
            entries = _entries(reply)
            if entries:
                return self._deliver(client, entries)
            if deadline - time.monotonic() <= 0.001:
                return []

    def _deliver(self, client: _Client, entries: list[tuple[bytes, Any]]) -> list[Message]:
        messages: list[Message] = []
        gone: list[bytes] = []
        for entry_id, fields in entries:
            if fields is None:
                gone.append(entry_id)
                continue
            message = self._codec.message(self.topic, entry_id, fields)
            self._delivered += 1
            # Re-inserted at the end: the dict's order is the delivery order.
            self._inflight.pop(str(message.offset), None)
            self._inflight[str(message.offset)] = self._delivered
            messages.append(message)
        if gone:
            # Trimmed (MAXLEN) or deleted before anyone processed them: nothing to
            # deliver, and leaving them pending would re-read them forever.
            log.warning(
                "%s: %d pending entries were deleted from the stream before being "
                "processed (trimmed by MAXLEN?): %s",
                self._where, len(gone), [i.decode() for i in gone[:10]],
            )  # fmt: skip
            client.execute_command("XACK", self.topic, self.group, *gone)
        return messages

    def _claim(self, client: _Client, count: int) -> list[Message]:
        """Claim entries idle longer than ``claim_idle_ms`` (one step of a PEL scan)."""
        for _ in range(10):
            reply = client.execute_command(
                "XAUTOCLAIM", self.topic, self.group, self.consumer, self._claim_idle_ms,
                self._claim_cursor, "COUNT", count,
            )  # fmt: skip
            self._claim_cursor = reply[0].decode()
            # Entries still in our own hands (a slow batch) are not news to the caller.
            fresh = [(i, f) for i, f in reply[1] if i.decode() not in self._inflight]
            messages = self._deliver(client, fresh)
            if len(reply) > 2 and reply[2]:
                log.warning(
                    "%s: %d claimed entries were deleted from the stream before being "
                    "processed", self._where, len(reply[2]),
                )  # fmt: skip
            if self._claim_cursor == "0-0":
                self._next_claim = time.monotonic() + self._claim_interval_s
                self._reap(client)
            if messages:
                log.warning(
                    "%s: claimed %d entries idle for more than %d ms from other members "
                    "(a crashed or stopped worker's events)",
                    self._where, len(messages), self._claim_idle_ms,
                )  # fmt: skip
                return messages
            if self._claim_cursor == "0-0":
                return []
        return []

    def _keep_inflight(self, client: _Client) -> None:
        """Reset the idle time of our own in-flight entries so nobody claims them."""
        if not self._inflight or self._claim_idle_ms <= 0:
            return
        now = time.monotonic()
        if now < self._next_touch:
            return
        interval_ms = self._claim_idle_ms / 3
        self._next_touch = now + interval_ms / 1000
        ids = list(self._inflight)
        for start in range(0, len(ids), _ACK_CHUNK):
            # min-idle: an entry another member just claimed (idle ~0) is left to it.
            client.execute_command(
                "XCLAIM", self.topic, self.group, self.consumer, int(interval_ms / 2),
                *ids[start : start + _ACK_CHUNK], "JUSTID",
            )  # fmt: skip

    def _reap(self, client: _Client) -> None:
        if self._reap_idle_ms <= 0:
            return
        reply = client.execute_command("XINFO", "CONSUMERS", self.topic, self.group)
        for raw in reply or []:
            info = dict(zip(raw[::2], raw[1::2], strict=False))
            name = _text(info.get(b"name", b""))
            idle = int(info.get(b"idle", 0))
            if name == self.consumer or idle < self._reap_idle_ms or info.get(b"pending"):
                continue
            if self._reaper is None:
                self._reaper = client.register_script(_REAP_SCRIPT)
            if self._reaper(keys=[self.topic], args=[self.group, name]) != -1:
                log.info("%s: removed member '%s' idle for %d ms", self._where, name, idle)

    # --- acknowledging ----------------------------------------------------------------

    def commit(self, messages: Sequence[Message]) -> None:
        """Acknowledge these entries and every entry delivered before them (``XACK``).

        Raises
        ------
        StreamUnavailableError
            When the server cannot be reached (nothing is acknowledged for sure).
        SourceError
            When a message is not from this stream or Redis refuses the acknowledgement.
        """
        if not messages:
            return
        client = self._require_open()
        ids: dict[str, None] = {}
        last = 0
        for message in messages:
            if message.topic != self.topic or not isinstance(message.offset, str):
                raise SourceError(
                    f"Cannot commit {message.position} on {self._where}: it was not read "
                    "from this stream. Commit each message on the source that read it."
                )
            ids[message.offset] = None
            last = max(last, self._inflight.get(message.offset, 0))
        for entry_id, number in self._inflight.items():
            if number > last:
                break
            ids[entry_id] = None
        todo = list(ids)
        try:
            pipe: _Pipeline = client.pipeline(transaction=False)
            for start in range(0, len(todo), _ACK_CHUNK):
                pipe.execute_command(
                    "XACK", self.topic, self.group, *todo[start : start + _ACK_CHUNK]
                )
            pipe.execute()
        except _client_errors() as exc:
            self._fail(exc, doing=f"acknowledging {len(todo)} entries up to {todo[-1]} on")
        for entry_id in todo:
            self._inflight.pop(entry_id, None)

    # --- helpers ----------------------------------------------------------------------

    def _ensure_group(self, client: _Client) -> None:
        try:
            client.execute_command(
                "XGROUP", "CREATE", self.topic, self.group, self._initial_id, "MKSTREAM"
            )
            log.info("%s: created the group at '%s'", self._where, self._initial_id)
        except _client_errors() as exc:
            if "BUSYGROUP" in str(exc):
                return
            self._fail(exc, doing="creating the consumer group of")

    def _hand_back(self, client: _Client) -> None:
        """Mark every entry this member holds as long idle, for others to claim."""
        held: list[bytes] = []
        cursor = "-"
        while True:
            page = client.execute_command(
                "XPENDING", self.topic, self.group, cursor, "+", _ACK_CHUNK, self.consumer
            )
            held += [row[0] for row in page]
            if len(page) < _ACK_CHUNK:
                break
            cursor = "(" + page[-1][0].decode()
        for start in range(0, len(held), _ACK_CHUNK):
            client.execute_command(
                "XCLAIM", self.topic, self.group, self.consumer, 0,
                *held[start : start + _ACK_CHUNK], "IDLE", _TEN_YEARS_MS, "JUSTID",
            )  # fmt: skip
        if held:
            log.info("%s: handed %d unacknowledged entries back", self._where, len(held))

    def _require_open(self) -> _Client:
        if self._client is None:
            raise SourceError(f"{self._where}: the source is not open; call open() first")
        return self._client

    def _fail(self, exc: BaseException, *, doing: str) -> NoReturn:
        raise _translate(exc, url=self.url, where=f"{doing} {self._where}") from exc


class RedisStreamSink:
    """Appends records to a Redis stream (``XADD``), pipelined until `flush`.

    Parameters
    ----------
    url
        ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
    topic
        The stream key (created by the first ``XADD``).
    options
        Headrace's own options, below; any other key goes to ``redis.Redis.from_url``.

        ``maxlen``
            Trim the stream to about this many entries on every append (``MAXLEN ~``);
            default: never trim. Entries trimmed before a group read them are lost to
            that group.
        ``approximate``
            ``False`` trims exactly (``MAXLEN =``, slower); default ``True``.
        ``max_buffer``
            Send the queued appends early once this many are waiting (default 10000),
            so memory stays bounded between flushes; failures still surface at `flush`.
        ``value_field``, ``key_field``, ``header_prefix``
            The entry layout (default ``value``, ``key``, ``h:``).
        ``socket_timeout``, ``socket_connect_timeout``, ``retries``
            Bounds on every call (default 5 s, 2 s, 1 retry).

    Raises
    ------
    DependencyMissingError
        When redis-py is not installed (``pip install 'headrace[redis]'``).
    ConfigError
        When an option has a wrong value.
    """

    def __init__(self, url: str, *, topic: str, options: Mapping[str, Any] | None = None) -> None:
        owner = "RedisStreamSink"
        _import_redis(owner)
        if not topic:
            raise ConfigError(f"{owner} needs a stream key, got topic={topic!r}")
        self.url = url
        self.topic = topic
        ours, self._client_options = _split_options(options, _SINK_OPTIONS)
        _check_client_options(url, self._client_options, known=_SINK_OPTIONS, owner=owner)
        self._options = ours
        self._codec = _Codec(ours, owner=owner)
        maxlen = ours.get("maxlen")
        if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int)):
            raise ConfigError(f"{owner} option 'maxlen' must be an integer, got {maxlen!r}")
        approximate = bool(ours.get("approximate", True))
        self._trim: list[Any] = (
            [] if maxlen is None else ["MAXLEN", "~" if approximate else "=", maxlen]
        )
        self._max_buffer = max(int(_positive(ours, "max_buffer", 10_000, owner=owner)), 1)
        self._where = f"stream '{topic}'"
        self._client: _Client | None = None
        self._pipe: _Pipeline | None = None
        self._queued = 0
        self._failure: SinkError | None = None

    def open(self) -> None:
        """Connect (and check the server answers).

        Raises
        ------
        StreamUnavailableError
            When the server cannot be reached.
        """
        if self._client is not None:
            return
        client = _make_client(
            self.url, self._options, self._client_options, owner="RedisStreamSink"
        )
        try:
            client.ping()
        except _client_errors() as exc:
            _close(client)
            raise _translate(exc, url=self.url, where=f"connecting to {self._where}") from exc
        self._client = client
        self._pipe = client.pipeline(transaction=False)

    def send(self, records: Sequence[OutRecord]) -> None:
        """Queue one ``XADD`` per record; they go out at `flush` (or when the buffer fills)."""
        pipe = self._pipe
        if pipe is None:
            raise SinkError(f"{self._where}: the sink is not open; call open() first")
        for record in records:
            pipe.execute_command("XADD", self.topic, *self._trim, "*", *self._codec.fields(record))
            self._queued += 1
            if self._queued >= self._max_buffer:
                self._execute()

    def flush(self, *, timeout: float) -> None:
        """Send every queued append and wait for the replies.

        Each round trip is bounded by ``socket_timeout`` (not by `timeout`: a Redis
        pipeline cannot be abandoned half way).

        Raises
        ------
        SinkError
            When any append failed or the server could not be reached; the records of
            this flush may be partly written (the caller redelivers them: at-least-once).
        """
        if self._client is None:
            return
        self._execute()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Flush what is queued (best effort) and disconnect."""
        if self._client is None:
            return
        try:
            self.flush(timeout=5.0)
        except SinkError as exc:
            log.warning("%s: records lost on close: %s", self._where, exc)
        finally:
            client, self._client, self._pipe = self._client, None, None
            _close(client)

    def _execute(self) -> None:
        queued, self._queued = self._queued, 0
        pipe = self._pipe
        if not queued or pipe is None:
            return
        try:
            results = pipe.execute(raise_on_error=False)
        except _client_errors() as exc:
            pipe.reset()
            if self._failure is None:
                where = f"appending {queued} records to {self._where}"
                self._failure = SinkError(str(_translate(exc, url=self.url, where=where)))
                self._failure.__cause__ = exc
            return
        failed = [(i, r) for i, r in enumerate(results) if isinstance(r, Exception)]
        if failed and self._failure is None:
            index, error = failed[0]
            self._failure = SinkError(
                f"Redis at {redact_url(self.url)} refused {len(failed)} of {queued} appends to "
                f"{self._where} (first: record {index}: {error}). Check the stream key is a "
                "stream and the server's memory limits."
            )


def _entries(reply: Any) -> list[tuple[bytes, Any]]:
    """The ``[[id, fields|None], ...]`` of a single-stream XREADGROUP reply."""
    if not reply:
        return []
    return [(entry[0], entry[1]) for entry in reply[0][1]]


def _is_nogroup(exc: BaseException) -> bool:
    return "NOGROUP" in str(exc)


def _translate(exc: BaseException, *, url: str, where: str) -> StreamUnavailableError | SourceError:
    """A redis-py error as a headrace one (connection trouble -> unavailable)."""
    from redis import exceptions

    shown = redact_url(url)
    if isinstance(exc, exceptions.AuthenticationError):
        return StreamUnavailableError(
            f"Redis at {shown} refused the credentials while {where}: {exc}. "
            "Check the user and password in the URL."
        )
    if isinstance(exc, exceptions.ConnectionError | exceptions.TimeoutError | OSError):
        return StreamUnavailableError(
            f"Redis at {shown} is unreachable while {where}: {exc}. Check that the server "
            "runs and the URL is right; the next call tries again."
        )
    return SourceError(f"Redis at {shown} failed while {where}: {exc}")
