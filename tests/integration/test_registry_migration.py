"""A registry written before content digests (schema 2) is migrated in place, on SQLite
and PostgreSQL: the rows of ``tests/unit/registry/data/registry-v2`` (written by the code
of commit ea5d7ac) copied into the old layout, then opened by today's code."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    text,
)

from headrace.registry import Registry
from support.models import local_registry

FIXTURE = Path(__file__).parents[1] / "unit" / "registry" / "data" / "registry-v2"

_OLD = MetaData()
_TABLES = [
    Table(
        "headrace_schema_version",
        _OLD,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", String(40), nullable=False),
    ),
    Table(
        "headrace_releases",
        _OLD,
        Column("name", String(128), nullable=False),
        Column("version", Integer, nullable=False, autoincrement=False),
        Column("digest", String(64), nullable=False, unique=True),
        Column("flavor", String(32), nullable=False),
        Column("manifest", LargeBinary, nullable=False),
        Column("created_at", String(40), nullable=False),
        Column("created_by", String(256), nullable=False),
        PrimaryKeyConstraint("name", "version"),
    ),
    Table(
        "headrace_aliases",
        _OLD,
        Column("name", String(128), nullable=False),
        Column("alias", String(64), nullable=False),
        Column("version", Integer, nullable=False),
        Column("updated_at", String(40), nullable=False),
        Column("updated_by", String(256), nullable=False),
        PrimaryKeyConstraint("name", "alias"),
    ),
    Table(
        "headrace_alias_events",
        _OLD,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(128), nullable=False),
        Column("alias", String(64), nullable=False),
        Column("from_version", Integer, nullable=True),
        Column("to_version", Integer, nullable=True),
        Column("kind", String(16), nullable=False),
        Column("actor", String(256), nullable=False),
        Column("at", String(40), nullable=False),
        Column("reason", Text, nullable=False),
    ),
    Table(
        "headrace_release_tags",
        _OLD,
        Column("name", String(128), nullable=False),
        Column("version", Integer, nullable=False, autoincrement=False),
        Column("tag", String(64), nullable=False),
        Column("value", Text, nullable=False),
        Column("updated_at", String(40), nullable=False),
        Column("updated_by", String(256), nullable=False),
        PrimaryKeyConstraint("name", "version", "tag"),
    ),
    Table(
        "headrace_audit_log",
        _OLD,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("at", String(40), nullable=False),
        Column("actor", String(256), nullable=False),
        Column("action", String(64), nullable=False),
        Column("subject", String(512), nullable=False),
        Column("details", Text, nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
    ),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    url = (
        f"sqlite:///{tmp_path / 'registry.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    source = sqlite3.connect(FIXTURE / "registry.db")
    try:
        with engine.begin() as conn:
            _OLD.create_all(conn)
            for table in _TABLES:
                cursor = source.execute(f"SELECT * FROM {table.name}")  # noqa: S608 - fixed names
                names = [d[0] for d in cursor.description]
                rows = [dict(zip(names, row, strict=True)) for row in cursor]
                if rows:
                    conn.execute(table.insert(), rows)
            if engine.dialect.name == "postgresql":
                # Explicit ids do not advance a SERIAL's sequence; the old code's did.
                conn.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('headrace_alias_events', 'id'), "
                        "(SELECT max(id) FROM headrace_alias_events))"
                    )
                )
    finally:
        source.close()
        engine.dispose()
    shutil.copytree(FIXTURE / "artifacts", tmp_path / "artifacts")
    with local_registry(tmp_path, url=url) as registry:
        yield registry


def test_an_old_registry_is_migrated_and_verifies(old_registry: Registry) -> None:
    releases = old_registry.list_releases("fraud")
    assert [(r.version, r.aliases) for r in releases] == [
        (1, ("champion",)),
        (2, ("challenger",)),
    ]
    assert old_registry.verify_audit() == 5
    first = old_registry.get("fraud:1")
    assert first.content_digest == old_registry.get("fraud:2").content_digest
    assert old_registry.release_tags("fraud:1") == {"drift": "alarm"}
    assert (old_registry.fetch(first) / "model.pkl").is_file()
    # A release from before verification was recorded may still take an alias.
    old_registry.set_alias("fraud", "champion", 2, reason="after the upgrade")
    assert old_registry.verify_audit() == 6
    url = old_registry.url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT content_digest FROM headrace_releases ORDER BY version")
        ).scalars()
        assert list(stored) == [first.content_digest] * 2
    engine.dispose()
