"""Fixtures of the integration suite: one registry per test, on SQLite and on PostgreSQL
(the ``postgres`` marker), its artifacts and cache under the test's own directory, and
the files of a trained sklearn release to register in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.registry import Registry
from support.models import ModelFiles, local_registry, write_sklearn_release


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def registry(registry_url: str, tmp_path: Path) -> Iterator[Registry]:
    with local_registry(tmp_path, url=registry_url) as opened:
        yield opened


@pytest.fixture
def files(tmp_path: Path) -> ModelFiles:
    return write_sklearn_release(tmp_path / "model")
