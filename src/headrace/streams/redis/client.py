"""The redis-py client both sides build, the entry layout, and error translation."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any, Protocol, cast

import orjson

from headrace._redact import redact_url
from headrace.errors import ConfigError, DependencyMissingError, SourceError, StreamUnavailableError
from headrace.streams.base import Message, OutRecord
from headrace.streams.file.formats import (
    CONTENT_TYPE_HEADER,
    CSV_CONTENT_TYPE,
    CSV_ERROR_HEADER,
)

__all__ = []

log = logging.getLogger("headrace.streams.redis")


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

    def __init__(self, ours: Mapping[str, Any], *, owner: str, sink: bool = False) -> None:
        self.value_field = str(ours.get("value_field", "value")).encode()
        # "*": the entry's own fields are the event (another producer's layout, e.g.
        # `XADD events * event_id e1 amount 3.5`): a JSON object of their text, marked
        # for the pipeline to type per schema field, as it types CSV rows.
        self.whole_entry = self.value_field == b"*"
        if self.whole_entry and sink:
            raise ConfigError(
                f"{owner}: value_field '*' (the entry's fields are the event) is for "
                "sources only; a sink writes the value under one field: name it"
            )
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
        if self.whole_entry:
            return self._whole_entry(stream, entry_id, fields)
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

    def _whole_entry(self, stream: str, entry_id: bytes, fields: list[bytes]) -> Message:
        """An entry whose fields are the event: their text as a JSON object, the key and
        the prefixed headers apart; undecodable text passes as raw bytes, marked so the
        pipeline dead-letters it."""
        event: dict[str, str] = {}
        key: bytes | None = None
        headers: list[tuple[str, bytes]] = []
        problem = None
        for i in range(0, len(fields) - 1, 2):
            name, data = fields[i], fields[i + 1]
            if name == self.key_field:
                key = data
            elif name.startswith(self._prefix_bytes):
                headers.append((_text(name[len(self._prefix_bytes) :]), data))
            else:
                try:
                    event[name.decode()] = data.decode()
                except UnicodeDecodeError:
                    problem = f"field {_text(name)!r} is not UTF-8 text"
        if problem is None:
            value = orjson.dumps(event)
            headers.append((CONTENT_TYPE_HEADER, CSV_CONTENT_TYPE))
        else:
            value = b"".join(fields)
            headers.append((CSV_ERROR_HEADER, problem.encode()))
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
