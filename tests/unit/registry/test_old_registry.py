"""A registry written by the code before content digests (schema 2) stays readable.

``data/registry-v2`` was written by headrace at commit ea5d7ac (fraud:1 champion,
fraud:2 of the same files, fraud@challenger -> 2, a drift tag on fraud:1).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from headrace.registry import Registry
from support.models import ModelFiles, draft_from, local_registry

FIXTURE = Path(__file__).parent / "data" / "registry-v2"


@pytest.fixture
def old(tmp_path: Path) -> Iterator[Registry]:
    shutil.copy(FIXTURE / "registry.db", tmp_path / "registry.db")
    shutil.copytree(FIXTURE / "artifacts", tmp_path / "artifacts")
    with local_registry(tmp_path) as registry:
        yield registry


def test_old_rows_read_verify_and_load(old: Registry, tmp_path: Path) -> None:
    assert [(r.version, r.aliases) for r in old.list_releases("fraud")] == [
        (1, ("champion",)),
        (2, ("challenger",)),
    ]
    first, second = old.get("fraud:1"), old.get("fraud@challenger")
    assert first.digest != second.digest  # registered apart in time...
    assert first.content_digest == second.content_digest  # ...with the same content
    assert old.verify_audit() == 5  # old register records carry the release digest only
    assert (old.fetch(first) / "model.pkl").is_file()
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT content_digest FROM headrace_releases ORDER BY version")
        ).scalars()
        assert list(stored) == [first.content_digest] * 2  # backfilled by the migration
    engine.dispose()


def test_registering_old_content_again_is_identical_to_the_first(old: Registry) -> None:
    source = FIXTURE / "src-model"
    files = ModelFiles(
        model=source / "model.pkl",
        schema=source / "schema.yaml",
        data=source / "train.parquet",
        metrics=source / "metrics.json",
        config=source / "config.yaml",
        features=None,  # type: ignore[arg-type]
        labels=None,  # type: ignore[arg-type]
    )
    again = old.register(draft_from(files, old.cache_dir.parent))
    assert again.duplicate_of == "fraud:1"
    assert old.verify_audit() == 5
