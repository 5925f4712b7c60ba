"""ModelRepository's arguments and the watcher's PostgreSQL URL handling (no services)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headrace.errors import ConfigError
from headrace.registry import Registry
from headrace.serving import ModelRepository
from headrace.serving._watch import postgres_dsn


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(
        f"sqlite:///{tmp_path / 'registry.db'}",
        artifacts=f"file://{tmp_path / 'artifacts'}",
        actor="tester",
        cache_dir=tmp_path / "cache",
    ) as opened:
        yield opened


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alias": "7up"}, "Invalid alias '7up' to serve"),
        ({"alias": ""}, "Invalid alias '' to serve"),
        ({"poll_interval_s": 0}, r"Invalid poll interval 0s"),
        ({"poll_interval_s": math.nan}, r"Invalid poll interval nans"),
        ({"memory_budget_bytes": 0}, "Invalid memory budget 0 bytes"),
        ({"overcommit": 0.9}, "Invalid overcommit ratio 0.9"),
    ],
)
def test_bad_arguments_are_refused(
    registry: Registry, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelRepository(registry, **kwargs)


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgresql+psycopg://u:s3cret@h/db", "postgresql://u:s3cret@h/db"),
        ("postgres://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///x.db", None),
        ("not a url", None),
    ],
)
def test_postgres_dsn(url: str, dsn: str | None) -> None:
    assert postgres_dsn(url) == dsn
