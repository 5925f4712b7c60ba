"""Fixtures of the fault suite: the release, a worker harness, a broker and a Redis of
the test's own (to stall, kill and restart by process id)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.faults import RedisServer
from support.kafka import (  # noqa: F401 (harness and private_broker: fixtures)
    Release,
    harness,
    private_broker,
    register_fraud_release,
)


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    home = tmp_path_factory.mktemp("chaos") / "home"
    ref, digest = register_fraud_release(home)
    return Release(home, ref, digest)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
