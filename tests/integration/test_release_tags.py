"""Release tags on every registry store: set, overwrite, audited, and the migration that
adds them to a registry created before they existed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from headrace.errors import ConfigError, ReleaseNotFoundError
from headrace.registry import Registry
from headrace.registry.tables import MIGRATIONS, schema_version
from support.models import ModelFiles, draft_from, local_registry


def test_tags_are_set_overwritten_and_audited(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    registry.register(draft_from(files, tmp_path), alias="champion")
    registry.register(draft_from(files, tmp_path), allow_duplicate=True)
    assert registry.release_tags("fraud:1") == {}
    tagged = registry.tag_release("fraud@champion", "drift", "alarm")
    assert tagged.ref == "fraud:1"
    registry.tag_release("fraud:1", "drift", "alarm: amount at row 1500")
    registry.tag_release("fraud:1", "owner", "risk-team")
    assert registry.release_tags("fraud:1") == {
        "drift": "alarm: amount at row 1500",
        "owner": "risk-team",
    }
    assert registry.release_tags("fraud:2") == {}  # per version
    records = registry.audit_log(action="release.tag")
    assert [(r.subject, r.details) for r in records] == [
        ("fraud:1", {"tag": "drift", "from": None, "to": "alarm"}),
        ("fraud:1", {"tag": "drift", "from": "alarm", "to": "alarm: amount at row 1500"}),
        ("fraud:1", {"tag": "owner", "from": None, "to": "risk-team"}),
    ]
    assert registry.verify_audit() == 6  # two registrations, one alias, three tags


def test_bad_tags_and_unknown_releases_are_refused(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    registry.register(draft_from(files, tmp_path))
    with pytest.raises(ConfigError, match=r"Invalid tag 'drift alarm'.*letters, digits"):
        registry.tag_release("fraud:1", "drift alarm", "x")
    with pytest.raises(ReleaseNotFoundError, match=r"fraud:9.*headrace releases list fraud"):
        registry.tag_release("fraud:9", "drift", "alarm")
    assert registry.verify_audit() == 1  # nothing written by the refusals


def test_a_registry_from_before_tags_is_migrated(
    registry_url: str, files: ModelFiles, tmp_path: Path
) -> None:
    # Build the registry exactly as schema version 1 left it.
    engine = create_engine(registry_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        schema_version.create(conn, checkfirst=True)
        version, step = MIGRATIONS[0]
        step(conn)
        conn.execute(schema_version.insert().values(version=version, applied_at="then"))
    engine.dispose()
    with local_registry(tmp_path, url=registry_url) as registry:
        registry.register(draft_from(files, tmp_path))
        registry.tag_release("fraud:1", "drift", "alarm")
        assert registry.release_tags("fraud:1") == {"drift": "alarm"}
        assert registry.verify_audit() == 2
    engine = create_engine(registry_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        versions = conn.execute(select(schema_version.c.version)).scalars().all()
    engine.dispose()
    assert sorted(versions) == [version for version, _ in MIGRATIONS]
