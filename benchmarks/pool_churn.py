"""20 models under a memory budget that fits 5 (run by hand; results in README.md).

Registers 20 scikit-learn random forests (native memory, about 10 MB each), measures one
to size the budget at 5 of them, then sends requests (get + a one-row inference) spread
over all 20 from 16 concurrent tasks, uniformly and Zipf-skewed. Reports throughput,
latency, loads, evictions, the most memory the pool held against its capacity, and the
process's peak RSS.

    .venv/bin/python benchmarks/pool_churn.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MODELS = 20
FITS = 5
CONCURRENCY = 16


def _register(tmp: Path) -> object:
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from sklearn.ensemble import RandomForestClassifier

    from headrace.registry import Registry
    from headrace.release.bundle import build_draft

    rng = np.random.default_rng(11)
    x = rng.normal(size=(10_000, 5))
    y = (x[:, 0] + rng.normal(0, 1, len(x)) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=40, random_state=0).fit(x, y)
    joblib.dump(forest, tmp / "model.pkl")
    names = [f"f{i}" for i in range(5)]
    (tmp / "schema.yaml").write_text(
        yaml.safe_dump({"fields": [{"name": n, "type": "float"} for n in names]})
    )
    pq.write_table(pa.table({n: x[:1000, i] for i, n in enumerate(names)}), tmp / "data.parquet")
    registry = Registry(
        f"sqlite:///{tmp / 'registry.db'}",
        artifacts=f"file://{tmp / 'artifacts'}",
        actor="bench",
        cache_dir=tmp / "cache",
    )
    for i in range(MODELS):
        scratch = tmp / f"scratch{i}"
        scratch.mkdir()
        draft = build_draft(
            tmp / "model.pkl",
            name=f"m{i:02d}",
            flavor="sklearn",
            workdir=scratch,
            schema_path=tmp / "schema.yaml",
            data_path=tmp / "data.parquet",
        )
        registry.register(draft, alias="champion")
    return registry


async def _run(registry: object, budget: int, order: list[int]) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from headrace.registry import Registry
    from headrace.runtimes import resident_bytes
    from headrace.serving import ModelRepository

    assert isinstance(registry, Registry)
    metrics = CollectorRegistry()
    repo = ModelRepository(registry, memory_budget_bytes=budget, metrics_registry=metrics)
    row = {f"f{i}": np.zeros(1) for i in range(5)}
    latencies: list[float] = []
    peak_used = peak_models = peak_rss = 0
    queue = list(order)
    baseline = resident_bytes() or 0

    async def worker() -> None:
        nonlocal peak_used, peak_models, peak_rss
        while queue:
            name = f"m{queue.pop():02d}"
            started = time.perf_counter()
            service = await repo.get(name)
            service.infer(row, n_rows=1)
            latencies.append(time.perf_counter() - started)
            peak_used = max(peak_used, repo.pool.used_bytes)
            peak_models = max(peak_models, len(repo.pool.entries()))
            peak_rss = max(peak_rss, resident_bytes() or 0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    value = metrics.get_sample_value
    out = {
        "requests/s": len(order) / elapsed,
        "p50 ms": float(np.percentile(latencies, 50)) * 1000,
        "p99 ms": float(np.percentile(latencies, 99)) * 1000,
        "loads": value("headrace_pool_load_seconds_count", {"outcome": "ok"}) or 0,
        "evictions": value("headrace_pool_evictions_total") or 0,
        "cold loads": value("headrace_pool_cold_loads_total") or 0,
        "peak pool MB": peak_used / 1e6,
        "capacity MB": (repo.pool.capacity_bytes or 0) / 1e6,
        "peak models": peak_models,
        "RSS before MB": baseline / 1e6,
        "peak RSS MB": peak_rss / 1e6,
    }
    sizes = sorted(round(e.footprint_bytes / 1e6, 1) for e in repo.pool.entries())
    print(f"  resident at the end (MB): {sizes}")
    await repo.stop()
    return out


async def _footprint(registry: object) -> int:
    from headrace.registry import Registry
    from headrace.serving import ModelRepository

    assert isinstance(registry, Registry)
    repo = ModelRepository(registry)
    for i in range(3):  # the first load also pays for sklearn's imports
        await repo.get(f"m{i:02d}")
    sizes = [e.footprint_bytes for e in repo.pool.entries()]
    await repo.stop()
    return int(np.median(sizes))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory() as tmp:
        registry = _register(Path(tmp))
        size = asyncio.run(_footprint(registry))
        budget = int(size * FITS * 1.05)
        print(f"one model measures {size / 1e6:.1f} MB; budget {budget / 1e6:.1f} MB (fits 5)")
        zipf = np.minimum(rng.zipf(1.3, args.requests) - 1, MODELS - 1)
        cases = {
            "uniform": rng.integers(0, MODELS, args.requests).tolist(),
            "zipf 1.3": zipf.tolist(),
        }
        for label, order in cases.items():
            result = asyncio.run(_run(registry, budget, order))
            shown = ", ".join(f"{k} {v:.1f}" for k, v in result.items())
            print(f"{label:9} {shown}")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"peak RSS of the process: {peak_rss:.0f} MB")


if __name__ == "__main__":
    main()
