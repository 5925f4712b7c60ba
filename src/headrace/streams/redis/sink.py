"""`RedisStreamSink`: appends entries (``XADD``), pipelined until `RedisStreamSink.flush`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from headrace._redact import redact_url
from headrace.errors import ConfigError, SinkError
from headrace.streams.base import OutRecord
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
    _translate,
    log,
)

__all__ = ["RedisStreamSink"]

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
        self._codec = _Codec(ours, owner=owner, sink=True)
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
