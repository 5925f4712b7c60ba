"""The Redis dedupe store on the shared Redis, and what happens when Redis goes away."""

from __future__ import annotations

import uuid

import pytest

from headrace.errors import StreamUnavailableError
from headrace.pipeline.dedupe import RedisDedupe, open_dedupe


def test_records_are_shared_between_workers(redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    first = open_dedupe(redis_url, namespace=namespace, ttl_s=60, max_keys=1)
    second = open_dedupe(redis_url, namespace=namespace, ttl_s=60, max_keys=1)
    assert isinstance(first, RedisDedupe)
    try:
        assert first.seen(["a", "b"]) == [False, False]
        first.record(["a"])
        assert second.seen(["a", "b"]) == [True, False]
        other = open_dedupe(redis_url, namespace=namespace + "x", ttl_s=60, max_keys=1)
        assert other.seen(["a"]) == [False]  # pipelines do not see each other's ids
        other.close()
    finally:
        first.close()
        second.close()


def test_ids_expire(redis_url: str) -> None:
    import redis

    store = RedisDedupe(redis_url, namespace=f"test-{uuid.uuid4().hex}", ttl_s=1)
    try:
        store.record(["a"])
        ttl = redis.Redis.from_url(redis_url).ttl(store._prefix + "a")
        assert 0 < ttl <= 1
    finally:
        store.close()


def test_unreachable_redis_is_a_clear_error(free_tcp_port: int) -> None:
    store = RedisDedupe(f"redis://127.0.0.1:{free_tcp_port}/0", namespace="x", ttl_s=60)
    with pytest.raises(StreamUnavailableError, match=f"127.0.0.1:{free_tcp_port}.*memory://"):
        store.seen(["a"])
    store.close()
