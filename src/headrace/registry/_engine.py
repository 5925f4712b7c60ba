"""The registry's database engine: SQLite tuned for concurrent writers, or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from headrace.errors import ConfigError, DependencyMissingError
from headrace.redaction import redact_url

__all__ = ["create_engine_for", "first_line", "is_connect_error"]


def first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else repr(exc)


def is_connect_error(exc: OperationalError) -> bool:
    message = str(exc.orig).lower()
    return any(
        marker in message
        for marker in ("connection", "connect", "could not translate host", "unable to open")
    )


def create_engine_for(url: str) -> Engine:
    """An engine for the registry URL, configured for safe concurrent writers."""
    given = url
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise ConfigError(
            f"Invalid registry URL '{redact_url(given)}': use sqlite:///path.db or "
            "postgresql://user@host:port/db (HEADRACE_REGISTRY or --registry)."
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        try:
            return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        except (ModuleNotFoundError, NoSuchModuleError) as exc:
            raise DependencyMissingError("psycopg", "postgres", "a PostgreSQL registry") from exc
    raise ConfigError(
        f"Unsupported registry URL '{redact_url(url)}': use sqlite:///path.db or "
        "postgresql://user@host:port/db."
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's lazy BEGIN,
    # so concurrent registrations serialise on the database lock instead of failing late.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
