"""The model pool: budget, LRU eviction, single flight across threads and tasks, metrics;
and the footprint measurement it relies on, against models of known size."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from headrace.errors import ConfigError, ModelLoadError
from headrace.runtimes import (
    ModelPool,
    load_model,
    measure_footprint,
    object_graph_bytes,
    resident_bytes,
)

MB = 1_000_000


def sized(size: int) -> Callable[[Callable[[], str]], tuple[str, int]]:
    """A measure that declares every value `size` bytes (for the eviction arithmetic)."""

    def measure(load: Callable[[], str]) -> tuple[str, int]:
        return load(), size

    return measure


def test_evicts_least_recently_used_first() -> None:
    pool: ModelPool[str, str] = ModelPool(budget_bytes=300, measure=sized(100))
    for key in "abc":
        pool.get(key, lambda k=key: k.upper())
    assert pool.peek("a") == "A"  # a is now the most recently used; b the least
    pool.get("d", lambda: "D")
    assert [e.key for e in pool.entries()] == ["c", "a", "d"]
    assert pool.used_bytes == 300 and pool.evictions == 1
    pool.get("b", lambda: "B2")  # reloaded on demand, evicting c
    assert [e.key for e in pool.entries()] == ["a", "d", "b"]
    assert pool.peek("b") == "B2" and pool.evictions == 2


def test_overcommit_admits_more_than_the_budget() -> None:
    pool: ModelPool[str, str] = ModelPool(budget_bytes=200, overcommit=1.5, measure=sized(100))
    for key in "abc":
        pool.get(key, lambda k=key: k)
    assert len(pool.entries()) == 3 and pool.evictions == 0
    assert pool.capacity_bytes == 300


def test_unbounded_pool_never_evicts() -> None:
    pool: ModelPool[int, int] = ModelPool(measure=lambda load: (load(), 10**12))
    for key in range(5):
        pool.get(key, lambda k=key: k)
    assert len(pool.entries()) == 5 and pool.has_room()


def test_model_larger_than_the_pool_is_refused_and_others_stay() -> None:
    pool: ModelPool[str, str] = ModelPool(
        budget_bytes=100, measure=lambda load: (load(), 1000 if load() == "big" else 50)
    )
    pool.get("small", lambda: "small")
    with pytest.raises(ModelLoadError, match=r"Model 'big' takes 0\.0 MB.*budget") as info:
        pool.get("big", lambda: "big")
    assert "Raise the memory budget" in str(info.value)
    assert [e.key for e in pool.entries()] == ["small"] and pool.loading() == []


@pytest.mark.parametrize(
    ("budget", "overcommit", "match"),
    [
        (0, 1.0, "Invalid memory budget 0 bytes"),
        (-5, 1.0, "Invalid memory budget -5 bytes"),
        (100, 0.5, "Invalid overcommit ratio 0.5"),
        (100, math.nan, "Invalid overcommit ratio nan"),
    ],
)
def test_bad_budget_or_overcommit_is_refused(budget: int, overcommit: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ModelPool(budget_bytes=budget, overcommit=overcommit)


def _slow_counting_loader(calls: list[int], gate: threading.Event) -> Callable[[], object]:
    def load() -> object:
        calls.append(1)
        gate.wait(10)
        return object()

    return load


def test_single_flight_across_threads() -> None:
    pool: ModelPool[str, object] = ModelPool(measure=sized(1))
    calls: list[int] = []
    gate = threading.Event()
    load = _slow_counting_loader(calls, gate)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(pool.get("m", load))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while pool.loading() != ["m"] and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)


def test_single_flight_across_tasks_and_threads_together() -> None:
    pool: ModelPool[str, object] = ModelPool(measure=sized(1), metrics_registry=CollectorRegistry())
    calls: list[int] = []
    gate = threading.Event()
    load = _slow_counting_loader(calls, gate)
    from_thread: list[object] = []

    async def main() -> list[object]:
        tasks = [asyncio.create_task(pool.aget("m", load)) for _ in range(20)]
        await asyncio.sleep(0.05)
        thread = threading.Thread(target=lambda: from_thread.append(pool.get("m", load)))
        thread.start()
        await asyncio.sleep(0.05)
        gate.set()
        got = await asyncio.gather(*tasks)
        await asyncio.to_thread(thread.join, 10)
        return got

    results = asyncio.run(main())
    assert len(calls) == 1 and pool.cold_loads == 1
    assert all(r is results[0] for r in [*results, *from_thread]) and len(from_thread) == 1


def test_a_cancelled_waiter_does_not_cancel_the_load() -> None:
    pool: ModelPool[str, str] = ModelPool(measure=sized(1))
    gate = threading.Event()

    def load() -> str:
        gate.wait(10)
        return "model"

    async def main() -> str:
        first = asyncio.create_task(pool.aget("m", load))
        second = asyncio.create_task(pool.aget("m", load))
        await asyncio.sleep(0.05)
        first.cancel()  # the task that runs the load
        await asyncio.sleep(0.01)
        gate.set()
        return await second

    assert asyncio.run(main()) == "model"
    assert pool.peek("m") == "model"


def test_a_failed_load_reaches_every_waiter_and_is_retried_next_time() -> None:
    pool: ModelPool[str, str] = ModelPool(measure=sized(1))
    gate = threading.Event()
    attempts: list[int] = []

    def broken() -> str:
        attempts.append(1)
        gate.wait(10)
        raise ModelLoadError("model file 'x.pkl' is not a pickle")

    async def main() -> list[BaseException | str]:
        tasks = [asyncio.create_task(pool.aget("m", broken)) for _ in range(5)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert len(attempts) == 1
    assert all(isinstance(o, ModelLoadError) and "not a pickle" in str(o) for o in outcomes)
    assert pool.loading() == [] and "m" not in pool
    assert pool.get("m", lambda: "fixed") == "fixed"


def test_discard_keeps_handed_out_values_working() -> None:
    pool: ModelPool[str, list[int]] = ModelPool(budget_bytes=10, measure=sized(5))
    held = pool.get("m", lambda: [1, 2, 3])
    assert pool.discard("m") and not pool.discard("m")
    assert held == [1, 2, 3] and pool.used_bytes == 0


def test_metrics_report_models_memory_loads_evictions_and_cold_loads() -> None:
    registry = CollectorRegistry()
    pool: ModelPool[str, str] = ModelPool(
        budget_bytes=200, measure=sized(100), metrics_registry=registry
    )
    pool.get("a", lambda: "a")
    pool.get("b", lambda: "b", cold=False)
    pool.get("c", lambda: "c")

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        return registry.get_sample_value(name, labels or {})

    assert value("headrace_pool_models") == 2
    assert value("headrace_pool_memory_bytes") == 200
    assert value("headrace_pool_capacity_bytes") == 200
    assert value("headrace_pool_model_memory_bytes", {"model": "c"}) == 100
    assert value("headrace_pool_model_memory_bytes", {"model": "a"}) is None  # evicted
    assert value("headrace_pool_evictions_total") == 1
    assert value("headrace_pool_cold_loads_total") == 2
    assert value("headrace_pool_load_seconds_count", {"outcome": "ok"}) == 3


# -- the footprint measurement, against models of known size ------------------------


def test_footprint_of_a_numpy_model_matches_its_array() -> None:
    size = 24 * MB

    def load() -> dict[str, np.ndarray]:
        return {"weights": np.ones(size // 8)}

    value, footprint = measure_footprint(load)
    assert value["weights"].nbytes == size
    assert 0.9 * size <= footprint <= 1.3 * size


def test_object_graph_follows_views_and_object_arrays() -> None:
    base = np.zeros(1_000_000)  # 8 MB
    view = base[::2]
    assert object_graph_bytes(view) >= base.nbytes
    boxed = np.array([b"x" * 100_000 for _ in range(10)], dtype=object)
    assert object_graph_bytes(boxed) >= 1_000_000
    assert object_graph_bytes(object_graph_bytes) == 0  # functions are shared, not counted


@pytest.mark.skipif(resident_bytes() is None, reason="no /proc/self/statm on this platform")
def test_native_memory_is_measured_for_a_forest_after_another_was_freed(tmp_path: Path) -> None:
    """scikit-learn trees live in native memory (the object graph sees none of it); the RSS
    measurement must see it even when freed memory from an evicted model is around."""
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    x = rng.normal(size=(8000, 10))
    y = (x[:, 0] + rng.normal(0, 1, len(x)) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y)
    known = sum(
        e.tree_.__getstate__()["nodes"].nbytes + e.tree_.__getstate__()["values"].nbytes
        for e in forest.estimators_
    )
    joblib.dump(forest, tmp_path / "model.pkl")
    del forest

    def load() -> object:
        return load_model("sklearn", model_dir=tmp_path, entry="model.pkl")

    evicted = [measure_footprint(load)[0] for _ in range(3)]
    del evicted  # their memory is free now: the allocator would happily reuse it
    second, footprint = measure_footprint(load)
    assert object_graph_bytes(second) < known / 10  # the graph alone would miss it
    assert 0.7 * known <= footprint <= 2 * known, (footprint, known)


def test_a_reload_keeps_the_largest_footprint_seen() -> None:
    sizes = iter([100, 10])
    pool: ModelPool[str, str] = ModelPool(measure=lambda load: (load(), next(sizes)))
    pool.get("m", lambda: "m")
    pool.discard("m")
    pool.get("m", lambda: "m")  # measured 10 this time, e.g. while memory was freed
    assert [e.footprint_bytes for e in pool.entries()] == [100]


class Model:
    """Something a weak reference can watch."""


def test_models_dropped_during_a_measured_load_are_freed_after_it() -> None:
    """Freeing an evicted model while another load is measured would make that load look
    smaller by as much: the pool keeps it until the measurement is over."""
    import weakref

    pool: ModelPool[str, Model] = ModelPool(measure=sized(1))
    old = pool.get("old", Model)
    watch = weakref.ref(old)
    del old
    alive_during_load: list[bool] = []
    loading = threading.Event()
    release = threading.Event()

    def slow() -> Model:
        loading.set()
        release.wait(10)
        alive_during_load.append(watch() is not None)
        return Model()

    thread = threading.Thread(target=pool.get, args=("new", slow))
    thread.start()
    assert loading.wait(10)
    pool.discard("old")  # e.g. a hot swap dropping the release it replaced
    release.set()
    thread.join(10)
    assert alive_during_load == [True]
    assert watch() is None  # freed once the measurement ended


def test_prepare_runs_once_before_the_measured_load_and_is_not_measured() -> None:
    calls: list[str] = []

    def measure(load: Callable[[], str]) -> tuple[str, int]:
        calls.append("measure")
        return load(), 10

    def prepare() -> None:
        calls.append("prepare")
        # a one-time cost of the process, like importing the model's library
        calls.append(f"held: {_measuring_held()}")

    pool: ModelPool[str, str] = ModelPool(budget_bytes=100, measure=measure)
    assert pool.get("m", lambda: "v", prepare=prepare) == "v"
    assert pool.get("m", lambda: "other", prepare=prepare) == "v"  # resident: no prepare

    async def later() -> str:
        return await pool.aget("n", lambda: "w", prepare=prepare)

    assert asyncio.run(later()) == "w"
    # prepare runs under the measurement lock (nobody else's load measures its memory),
    # then the measured load
    assert calls == ["prepare", "held: True", "measure"] * 2


def test_a_failing_prepare_fails_the_load_and_leaves_the_pool_usable() -> None:
    pool: ModelPool[str, str] = ModelPool(measure=sized(1))

    def prepare() -> None:
        raise OSError("artifact store unreachable")

    with pytest.raises(OSError, match="artifact store unreachable"):
        pool.get("m", lambda: "v", prepare=prepare)
    assert "m" not in pool and pool.loading() == []
    assert pool.get("m", lambda: "v") == "v"


def _measuring_held() -> bool:
    """Whether this thread holds the footprint measurement lock (it is re-entrant)."""
    from headrace.runtimes.footprint import _MEASURING

    result: list[bool] = []

    def probe() -> None:
        free = _MEASURING.acquire(blocking=False)
        if free:
            _MEASURING.release()
        result.append(free)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return not result[0]
