"""The in-memory dedupe store: TTL and LRU bounds."""

from __future__ import annotations

import time

from headrace.pipeline.dedupe import MemoryDedupe, open_dedupe


def test_records_then_sees() -> None:
    store = MemoryDedupe(ttl_s=60, max_keys=10)
    assert store.seen(["a", "b"]) == [False, False]
    store.record(["a"])
    assert store.seen(["a", "b"]) == [True, False]


def test_ttl_expires(monkeypatch: object) -> None:
    store = MemoryDedupe(ttl_s=0.05, max_keys=10)
    store.record(["a"])
    time.sleep(0.08)
    assert store.seen(["a"]) == [False]


def test_lru_bound_evicts_oldest() -> None:
    store = MemoryDedupe(ttl_s=60, max_keys=3)
    store.record(["a", "b", "c"])
    store.record(["a"])  # refreshed: now most recent
    store.record(["d"])
    assert store.seen(["a", "b", "c", "d"]) == [True, False, True, True]


def test_open_dedupe_memory() -> None:
    assert isinstance(open_dedupe("memory://", namespace="p", ttl_s=1, max_keys=1), MemoryDedupe)
