"""The registry's database engine: SQLite tuned for concurrent writers, or PostgreSQL.

`Database` runs every registry operation in one transaction, migrating the tables on
first use; a writer holds the single write lock (SQLite ``BEGIN IMMEDIATE``; a PostgreSQL
advisory lock) for the whole transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
)

from headrace._redact import redact_url
from headrace.errors import (
    ConfigError,
    DependencyMissingError,
    RegistryError,
    RegistryUnavailableError,
)
from headrace.registry._records import now
from headrace.registry.tables import migrate

__all__ = ["Database", "create_engine_for", "first_line", "is_connect_error"]

_PG_LOCK_KEY = 0x68656164  # "head": one advisory lock serialises registry writes


class Database:
    """The registry database at `url`: transactions, the write lock, first-use migration."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine_for(url)
        self.postgres = self.engine.dialect.name == "postgresql"
        self._migrated = False

    def dispose(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Connection]:
        """One transaction; `write` takes the write lock first. Database failures become
        `RegistryUnavailableError` (cannot connect) or `RegistryError`."""
        try:
            if not self._migrated:
                # Its own transaction: a failing first operation must not roll it back.
                with self.engine.begin() as conn:
                    self._lock(conn)
                    migrate(conn, now=now(), where=redact_url(self.url))
                self._migrated = True
            with self.engine.begin() as conn:
                if write:
                    self._lock(conn)
                yield conn
        except OperationalError as exc:
            if exc.connection_invalidated or is_connect_error(exc):
                raise RegistryUnavailableError(
                    f"Cannot reach registry '{redact_url(self.url)}': "
                    f"{first_line(exc.orig)}. Check the server is running and the URL "
                    "(HEADRACE_REGISTRY) is right; `headrace doctor` checks every service."
                ) from exc
            raise RegistryError(
                f"Registry '{redact_url(self.url)}' failed: {first_line(exc.orig)}"
            ) from exc
        except DBAPIError as exc:
            raise RegistryError(
                f"Registry '{redact_url(self.url)}' failed: {first_line(exc.orig)}"
            ) from exc

    def _lock(self, conn: Connection) -> None:
        """Serialise writers (SQLite already did with BEGIN IMMEDIATE)."""
        if self.postgres:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


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
