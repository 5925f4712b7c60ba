"""Registry tables and their migrations (SQLite and PostgreSQL through SQLAlchemy Core).

Migrations are an ordered list; `migrate` applies the missing ones under the registry's
write lock, so two processes opening a new registry at once cannot both create it.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from sqlalchemy import (
    Column,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)

from headrace.audit.chain import audit_table, metadata
from headrace.errors import RegistryError
from headrace.release.identity import content_digest
from headrace.release.manifest import decode_manifest

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "alias_events",
    "aliases",
    "metadata",
    "migrate",
    "release_signatures",
    "release_tags",
    "releases",
    "rollout_evidence",
    "rollout_verdicts",
    "rollouts",
    "schema_version",
]

schema_version = Table(
    "headrace_schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", String(40), nullable=False),
)

releases = Table(
    "headrace_releases",
    metadata,
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False, autoincrement=False),
    Column("digest", String(64), nullable=False),
    Column("flavor", String(32), nullable=False),
    Column("manifest", LargeBinary, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("created_by", String(256), nullable=False),
    # Added by migration 3; NULL only where an old manifest could not be read.
    Column("content_digest", String(64), nullable=True),
    # "passed", "skipped" or "failed"; NULL when the registering code did not say.
    Column("verification", String(16), nullable=True),
    PrimaryKeyConstraint("name", "version"),
    UniqueConstraint("digest"),
)

aliases = Table(
    "headrace_aliases",
    metadata,
    Column("name", String(128), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("updated_by", String(256), nullable=False),
    PrimaryKeyConstraint("name", "alias"),
)

alias_events = Table(
    "headrace_alias_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    Column("kind", String(16), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("at", String(40), nullable=False),
    Column("reason", Text, nullable=False),
)

release_tags = Table(
    "headrace_release_tags",
    metadata,
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False, autoincrement=False),
    Column("tag", String(64), nullable=False),
    Column("value", Text, nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("updated_by", String(256), nullable=False),
    PrimaryKeyConstraint("name", "version", "tag"),
)
"""Free-form labels on a release (``drift=alarm``), set by monitors and people."""

release_signatures = Table(
    "headrace_release_signatures",
    metadata,
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False, autoincrement=False),
    Column("key_id", String(64), nullable=False),
    Column("algorithm", String(16), nullable=False),
    Column("public_key", String(128), nullable=False),
    Column("signature", String(256), nullable=False),
    Column("signed_at", String(40), nullable=False),
    Column("signed_by", String(256), nullable=False),
    PrimaryKeyConstraint("name", "version", "key_id"),
)
"""Ed25519 signatures over a release's digest (``headrace register --sign-key``)."""


rollouts = Table(
    "headrace_rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("baseline", Integer, nullable=False),
    Column("candidate", Integer, nullable=False),
    Column("strategy", String(16), nullable=False),
    # running, promoted, rolled_back, aborted or refused
    Column("state", String(16), nullable=False),
    Column("step", Integer, nullable=False),
    Column("plan", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("started_at", String(40), nullable=False),
    Column("ended_at", String(40), nullable=True),
    Column("revision", Integer, nullable=False),
    Column("lease_holder", String(256), nullable=True),
    Column("lease_epoch", Integer, nullable=False),
    Column("lease_expires_at", Float, nullable=True),
    # When the last "continue" verdict was stored and audited (epoch seconds): both are
    # throttled, since the lease holder may judge every second.
    Column("continue_stored_at", Float, nullable=True),
    Column("continue_audited_at", Float, nullable=True),
)
"""One row per rollout (or refusal); the lease columns fence its deciders."""

# A second running rollout of a name is refused in code under the write lock; the index
# makes the database refuse it too (both engines index a WHERE clause).
Index(
    "headrace_rollouts_one_running",
    rollouts.c.name,
    unique=True,
    sqlite_where=rollouts.c.state == "running",
    postgresql_where=rollouts.c.state == "running",
)

rollout_evidence = Table(
    "headrace_rollout_evidence",
    metadata,
    Column("rollout_id", Integer, nullable=False),
    Column("instance", String(256), nullable=False),
    Column("step", Integer, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    PrimaryKeyConstraint("rollout_id", "instance", "step"),
)
"""Each worker's or server's cumulative evidence per rollout step (upserted)."""

rollout_verdicts = Table(
    "headrace_rollout_verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("step", Integer, nullable=False),
    Column("decision", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("holder", String(256), nullable=False),
)
"""The verdicts of each rollout, oldest first (``continue`` at most every 30 s)."""


def _v1(conn: Connection) -> None:
    for table in (releases, aliases, alias_events, audit_table):
        table.create(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    release_tags.create(conn, checkfirst=True)


def _v3(conn: Connection) -> None:
    """Content digests (backfilled from the stored manifests), verification, signatures."""
    present = {c["name"] for c in inspect(conn).get_columns(releases.name)}
    for column in ("content_digest", "verification"):
        if column not in present:
            size = 64 if column == "content_digest" else 16
            conn.execute(text(f"ALTER TABLE {releases.name} ADD COLUMN {column} VARCHAR({size})"))
    rows = conn.execute(
        select(releases.c.name, releases.c.version, releases.c.manifest).where(
            releases.c.content_digest.is_(None)
        )
    ).all()
    for row in rows:
        try:
            raw = row.manifest
            data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
            digest = content_digest(decode_manifest(data))
        except (msgspec.MsgspecError, TypeError, ValueError):
            continue  # left NULL: `audit verify` names the unreadable row
        conn.execute(
            releases.update()
            .where((releases.c.name == row.name) & (releases.c.version == row.version))
            .values(content_digest=digest)
        )
    release_signatures.create(conn, checkfirst=True)


def _v4(conn: Connection) -> None:
    """Rollout state, per-instance evidence and verdicts."""
    for table in (rollouts, rollout_evidence, rollout_verdicts):
        table.create(conn, checkfirst=True)


MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _v1),
    (2, _v2),
    (3, _v3),
    (4, _v4),
]
"""(version, step) in order; append, never edit a released step."""

SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(conn: Connection, *, now: str, where: str) -> int:
    """Bring the schema up to `SCHEMA_VERSION`; return the version found before."""
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(
        select(schema_version.c.version).order_by(schema_version.c.version.desc()).limit(1)
    ).scalar()
    found = int(current or 0)
    if found > SCHEMA_VERSION:
        raise RegistryError(
            f"Registry '{where}' has schema version {found}, newer than this headrace "
            f"supports ({SCHEMA_VERSION}). Upgrade headrace."
        )
    for version, step in MIGRATIONS:
        if version > found:
            step(conn)
            conn.execute(schema_version.insert().values(version=version, applied_at=now))
    return found
