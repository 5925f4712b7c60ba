"""`RedisStreamSource`: one member of a consumer group, with claims of stuck entries."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

from headrace.errors import ConfigError, SourceError
from headrace.streams.base import Message, RevokeCallback
from headrace.streams.redis.client import (
    _check_client_options,
    _Client,
    _client_errors,
    _close,
    _Codec,
    _import_redis,
    _make_client,
    _Pipeline,
    _positive,
    _split_options,
    _text,
    _translate,
    log,
)

__all__ = ["RedisStreamSource"]

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

# Deletes a consumer only when it holds no pending entry, atomically: deleting one that
# holds entries would drop them from the PEL, i.e. lose them.
_REAP_SCRIPT = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


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
            The entry layout (default ``value``, ``key``, ``h:``). ``value_field: "*"``
            reads an entry's own fields as the event (``XADD s * amount 3.5 ...``):
            their text, typed per schema field by the pipeline as CSV cells are.
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


def _entries(reply: Any) -> list[tuple[bytes, Any]]:
    """The ``[[id, fields|None], ...]`` of a single-stream XREADGROUP reply."""
    if not reply:
        return []
    return [(entry[0], entry[1]) for entry in reply[0][1]]


def _is_nogroup(exc: BaseException) -> bool:
    return "NOGROUP" in str(exc)
