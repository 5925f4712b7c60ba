"""The served-model repository on real registries (SQLite, PostgreSQL) and real models:
resolution, errors, load failures, the memory budget, warm-up and hot swap under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from headrace.errors import ModelUnavailableError, UnknownModelError
from headrace.inference import InferenceService
from headrace.registry import Registry, Release, blob_key
from headrace.release.bundle import build_draft
from headrace.serving import (
    OUTPUT_PREDICTION,
    OUTPUT_PROBABILITIES,
    OUTPUT_SCORE,
    ModelRepository,
    TensorMetadata,
)
from support.models import ModelFiles, draft_from, local_registry, write_sklearn_release

MB = 1_000_000
# How long an alias move may take to be served: "on its own", not a speed target.
NOTICED_S = 10.0

GATED_MODEL = """
import os
import pathlib
import time

import numpy as np


class Model:
    def __init__(self):
        self.calls = 0

    def predict(self, matrix):
        where = pathlib.Path(os.environ["HEADRACE_TEST_WARMUP_DIR"])
        with open(where / "calls.log", "a") as log:
            log.write(f"{len(matrix)}\\n")
        if self.calls == 0:  # a model that initialises lazily, on its first batch
            deadline = time.monotonic() + 20
            while not (where / "gate").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        self.calls += 1
        return (matrix[:, 0] > 0).astype(np.int64)
"""

WEIGHTS_MODEL = """
import numpy as np


class Model:
    def __init__(self):
        self.weights = np.full({size} // 8, {seed}.0)

    def predict(self, matrix):
        return matrix[:, 0] * self.weights[0]
"""


@pytest.fixture
def sqlite_registry(tmp_path: Path) -> Iterator[Registry]:
    with local_registry(tmp_path) as opened:
        yield opened


def register_sklearn(
    registry: Registry,
    tmp_path: Path,
    *,
    name: str = "fraud",
    seed: int = 7,
    alias: str | None = "champion",
) -> tuple[Release, ModelFiles]:
    files = write_sklearn_release(tmp_path / f"{name}-{seed}", seed=seed, c=0.01 * seed)
    release = registry.register(draft_from(files, tmp_path / f"{name}-{seed}", name), alias=alias)
    return release, files


def register_python(
    registry: Registry,
    tmp_path: Path,
    source: str,
    *,
    name: str,
    alias: str | None = "champion",
) -> Release:
    """A python-flavor release over the sklearn release's schema and data (no config)."""
    files = write_sklearn_release(tmp_path / f"{name}-data")
    directory = tmp_path / f"{name}-model"
    directory.mkdir()
    (directory / "model.py").write_text(source)
    scratch = tmp_path / f"{name}-scratch"
    scratch.mkdir()
    draft = build_draft(
        Path(f"{directory / 'model.py'}:Model"),
        name=name,
        flavor="python",
        workdir=scratch,
        schema_path=files.schema,
        data_path=files.data,
        code_version="test",
    )
    return registry.register(draft, alias=alias)


def columns(files: ModelFiles, rows: int = 4) -> tuple[dict[str, Any], int]:
    x = files.features[:rows]
    return {f"f{i}": x[:, i] for i in range(x.shape[1])}, rows


def corrupt(registry: Registry, release: Release, tmp_path: Path) -> None:
    """Overwrite the model blob in the artifact store (and drop the verified cache)."""
    blob = tmp_path / "artifacts" / blob_key(release.manifest.model.files[0].sha256)
    blob.write_bytes(b"not the model that was registered")
    registry.clear_cache(release)


async def wait_until(predicate: Any, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


# -- resolution ---------------------------------------------------------------------


def test_name_serves_its_champion_and_versions_by_number(
    registry: Registry, tmp_path: Path
) -> None:
    first, files = register_sklearn(registry, tmp_path, seed=7)
    register_sklearn(registry, tmp_path, seed=8, alias=None)

    async def main() -> None:
        repo = ModelRepository(registry)
        champion = await repo.get("fraud")
        assert champion.release == "fraud:1" and champion.release_digest == first.digest
        assert (await repo.get("fraud", "2")).release == "fraud:2"
        assert repo.is_ready("fraud") and repo.is_ready("fraud", "2")
        assert not repo.is_ready("fraud", "3") and not repo.is_ready("nope")
        # the same predictions as the model called directly
        import joblib

        cols, n = columns(files)
        result = champion.infer(cols, n_rows=n)
        direct = joblib.load(files.model).predict_proba(files.features[:n])[:, 1]
        np.testing.assert_allclose(result.scores, direct)
        assert [(s.name, s.version, s.state) for s in repo.index()] == [
            ("fraud", "1", "READY"),
            ("fraud", "2", "READY"),
        ]
        await repo.stop()

    asyncio.run(main())


def test_concurrent_requests_share_one_load(sqlite_registry: Registry, tmp_path: Path) -> None:
    register_sklearn(sqlite_registry, tmp_path)
    metrics = CollectorRegistry()

    async def main() -> list[InferenceService]:
        repo = ModelRepository(sqlite_registry, metrics_registry=metrics)
        got = await asyncio.gather(*(repo.get("fraud") for _ in range(30)))
        await repo.stop()
        return got

    services = asyncio.run(main())
    assert all(s is services[0] for s in services)
    assert metrics.get_sample_value("headrace_pool_load_seconds_count", {"outcome": "ok"}) == 1
    assert metrics.get_sample_value("headrace_pool_cold_loads_total") == 1


def test_unknown_names_and_versions_say_what_is_wrong(registry: Registry, tmp_path: Path) -> None:
    register_sklearn(registry, tmp_path)
    register_sklearn(registry, tmp_path, name="churn", alias=None)

    async def main() -> None:
        repo = ModelRepository(registry)
        cases = [
            (("nope", None), r"Model 'nope' not found: check the name"),
            (("fraud", "9"), r"Version '9' of model 'fraud' does not exist\. Run"),
            (("fraud", "x"), r"Version 'x' of model 'fraud' does not exist: versions are numbers"),
            (("fraud", "-1"), r"Version '-1' of model 'fraud'"),
            (("churn", None), r"Model 'churn' has no 'champion' release.*alias set churn"),
        ]
        for (name, version), message in cases:
            with pytest.raises(UnknownModelError, match=message):
                await repo.get(name, version)
            with pytest.raises(UnknownModelError, match=message):
                repo.metadata(name, version)
        only = ModelRepository(registry, names=["churn"])
        with pytest.raises(UnknownModelError, match=r"'fraud' is not served here: check the name"):
            await only.get("fraud")
        assert (await repo.get("fraud")).release == "fraud:1"  # nothing broke

    asyncio.run(main())


def test_metadata_lists_schema_inputs_outputs_versions_and_flavor(
    sqlite_registry: Registry, tmp_path: Path
) -> None:
    register_sklearn(sqlite_registry, tmp_path)
    register_sklearn(sqlite_registry, tmp_path, seed=8, alias=None)

    async def main() -> None:
        repo = ModelRepository(sqlite_registry)
        before = repo.metadata("fraud")  # not loaded: read from the release
        await repo.get("fraud")
        after = repo.metadata("fraud")
        assert (
            before.inputs
            == after.inputs
            == [TensorMetadata(f"f{i}", "FP64", (-1,)) for i in range(5)]
        )
        assert (after.name, after.version, after.versions, after.platform) == (
            "fraud",
            "1",
            ["1", "2"],
            "sklearn",
        )
        # labels [legit, fraud] make the prediction text; probabilities give a score, and
        # every class's probability on request (the opt-in `probabilities` output)
        assert after.outputs == [
            TensorMetadata(OUTPUT_PREDICTION, "BYTES", (-1,)),
            TensorMetadata(OUTPUT_SCORE, "FP64", (-1,)),
            TensorMetadata(OUTPUT_PROBABILITIES, "FP64", (-1, 2)),
        ]
        assert repo.metadata("fraud", "2").version == "2"

    asyncio.run(main())


# -- failures -----------------------------------------------------------------------


def test_corrupt_artifact_is_a_clear_error_and_others_keep_serving(
    registry: Registry, tmp_path: Path
) -> None:
    bad, _ = register_sklearn(registry, tmp_path)
    register_sklearn(registry, tmp_path, name="churn", seed=9)
    corrupt(registry, bad, tmp_path)

    async def main() -> None:
        repo = ModelRepository(registry)
        with pytest.raises(ModelUnavailableError) as info:
            await repo.get("fraud")
        message = str(info.value)
        assert "Model 'fraud:1' could not be loaded" in message
        assert "corrupted or tampered with" in message and "Re-register" in message
        assert (await repo.get("churn")).release == "churn:1"
        states = {(s.name, s.state): s.reason for s in repo.index()}
        assert "corrupted" in states[("fraud", "UNAVAILABLE")]
        assert ("churn", "READY") in states
        # the failure is remembered for a while instead of reloading on every request
        started = time.monotonic()
        with pytest.raises(ModelUnavailableError, match="corrupted"):
            await repo.get("fraud")
        assert repo.pool.loading() == [] and time.monotonic() - started < 1

    asyncio.run(main())


def test_a_file_that_is_not_a_model_is_a_clear_error(
    sqlite_registry: Registry, tmp_path: Path
) -> None:
    register_python(sqlite_registry, tmp_path, "def oops(:\n", name="broken")
    register_sklearn(sqlite_registry, tmp_path)

    async def main() -> None:
        repo = ModelRepository(sqlite_registry)
        with pytest.raises(ModelUnavailableError, match=r"'broken:1' could not be loaded: .*"):
            await repo.get("broken")
        assert (await repo.get("fraud")).release == "fraud:1"

    asyncio.run(main())


# -- memory budget ------------------------------------------------------------------


def test_budget_evicts_least_recently_used_and_reloads_on_demand(
    sqlite_registry: Registry, tmp_path: Path
) -> None:
    size = 8 * MB
    for seed, name in enumerate(("a", "b", "c"), start=1):
        source = WEIGHTS_MODEL.format(size=size, seed=seed)
        register_python(sqlite_registry, tmp_path, source, name=name)
    metrics = CollectorRegistry()

    async def main() -> ModelRepository:
        repo = ModelRepository(
            sqlite_registry, memory_budget_bytes=20 * MB, metrics_registry=metrics
        )
        await repo.get("a")
        await repo.get("b")
        await repo.get("a")  # b is now the least recently used
        await repo.get("c")
        return repo

    repo = asyncio.run(main())
    entries = repo.pool.entries()
    assert [e.key for e in entries] == [("a", 1), ("c", 1)]
    for entry in entries:  # measured, and of the right order for 8 MB of weights
        assert 0.9 * size <= entry.footprint_bytes <= 2 * size, entry
    assert metrics.get_sample_value("headrace_pool_evictions_total") == 1
    states = {s.name: (s.state, s.reason) for s in repo.index()}
    assert states["b"] == ("UNAVAILABLE", "not loaded; loads on request")
    assert asyncio.run(repo.get("b")).release == "b:1"  # reloaded, evicting a
    assert [e.key for e in repo.pool.entries()] == [("c", 1), ("b", 1)]
    assert metrics.get_sample_value("headrace_pool_cold_loads_total") == 4


def test_unload_then_load(sqlite_registry: Registry, tmp_path: Path) -> None:
    register_sklearn(sqlite_registry, tmp_path)

    async def main() -> None:
        repo = ModelRepository(sqlite_registry)
        await repo.load("fraud")
        assert repo.is_ready("fraud")
        await repo.unload("fraud")
        assert not repo.is_ready("fraud")
        assert [(s.state, s.reason) for s in repo.index()] == [("UNAVAILABLE", "unloaded")]
        with pytest.raises(ModelUnavailableError, match="unloaded through the repository API"):
            await repo.get("fraud")
        with pytest.raises(ModelUnavailableError, match="unloaded"):
            await repo.get("fraud", "1")
        await repo.load("fraud")
        assert (await repo.get("fraud")).release == "fraud:1"
        with pytest.raises(UnknownModelError, match="'nope' not found"):
            await repo.load("nope")

    asyncio.run(main())


# -- warm-up ------------------------------------------------------------------------


def test_warmup_batch_runs_before_the_model_is_ready(
    sqlite_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = tmp_path / "warmup"
    where.mkdir()
    monkeypatch.setenv("HEADRACE_TEST_WARMUP_DIR", str(where))
    register_python(sqlite_registry, tmp_path, GATED_MODEL, name="lazy")
    log = where / "calls.log"

    async def main() -> None:
        repo = ModelRepository(sqlite_registry)
        request = asyncio.create_task(repo.get("lazy"))
        await wait_until(log.exists)  # the warm-up batch is being scored
        assert not repo.is_ready("lazy")
        assert [(s.name, s.state) for s in repo.index()] == [("lazy", "LOADING")]
        assert not request.done()
        (where / "gate").touch()
        service = await request
        assert repo.is_ready("lazy")
        assert log.read_text().split() == ["64"]  # one warm-up batch, before any request
        service.infer({f"f{i}": np.zeros(3) for i in range(5)}, n_rows=3)
        assert log.read_text().split() == ["64", "3"]

    asyncio.run(main())


def test_start_preloads_and_warms_without_a_request(
    sqlite_registry: Registry, tmp_path: Path
) -> None:
    register_sklearn(sqlite_registry, tmp_path)
    metrics = CollectorRegistry()

    register_sklearn(sqlite_registry, tmp_path, name="churn")

    async def main() -> None:
        repo = ModelRepository(sqlite_registry, metrics_registry=metrics)
        await repo.start()
        assert {(s.name, s.state) for s in repo.index()} == {
            ("churn", "LOADING"),
            ("fraud", "LOADING"),
        }
        await wait_until(lambda: repo.is_ready("fraud") and repo.is_ready("churn"))
        await repo.get("fraud")
        await repo.stop()

    asyncio.run(main())
    assert metrics.get_sample_value("headrace_pool_cold_loads_total") == 0


def test_preloading_stops_when_the_budget_is_full(
    sqlite_registry: Registry, tmp_path: Path
) -> None:
    for seed, name in enumerate(("a", "b", "c"), start=1):
        source = WEIGHTS_MODEL.format(size=8 * MB, seed=seed)
        register_python(sqlite_registry, tmp_path, source, name=name)

    async def main() -> None:
        repo = ModelRepository(sqlite_registry, memory_budget_bytes=20 * MB)
        await repo.start()
        await wait_until(lambda: all(s.state != "LOADING" for s in repo.index()))
        states = {s.name: (s.state, s.reason) for s in repo.index()}
        assert states == {
            "a": ("READY", ""),
            "b": ("READY", ""),
            "c": ("UNAVAILABLE", "not loaded; loads on request"),
        }
        assert repo.pool.evictions == 0
        await repo.stop()

    asyncio.run(main())


# -- hot swap -----------------------------------------------------------------------


async def hammer(
    repo: ModelRepository, files: ModelFiles, stop: asyncio.Event, seen: list[str]
) -> None:
    """Request predictions until told to stop; any failure propagates."""
    cols, n = columns(files)
    while not stop.is_set():
        service = await repo.get("fraud")
        result = service.infer(cols, n_rows=n)
        assert result.n_predicted == n, result.rejections
        seen.append(result.release)
        await asyncio.sleep(0)


async def time_to_serve(repo: ModelRepository, release: str, *, timeout: float = 10) -> float:
    started = time.monotonic()
    while (await repo.get("fraud")).release != release:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{release} not served within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def test_alias_moves_swap_without_failed_requests(registry: Registry, tmp_path: Path) -> None:
    """SQLite notices by polling; PostgreSQL by NOTIFY (the poll is set to 60 s there)."""
    _, files = register_sklearn(registry, tmp_path, seed=7)
    register_sklearn(registry, tmp_path, seed=8, alias=None)
    postgres = registry.url.startswith("postgresql")
    metrics = CollectorRegistry()

    async def main() -> tuple[float, float, list[str]]:
        repo = ModelRepository(
            registry, poll_interval_s=60.0 if postgres else 0.5, metrics_registry=metrics
        )
        await repo.start()
        await wait_until(lambda: repo.is_ready("fraud"))
        old = await repo.get("fraud")
        stop = asyncio.Event()
        seen: list[str] = []
        workers = [asyncio.create_task(hammer(repo, files, stop, seen)) for _ in range(8)]
        await asyncio.sleep(0.2)
        await asyncio.to_thread(registry.set_alias, "fraud", "champion", 2, reason="promote")
        promoted = await time_to_serve(repo, "fraud:2")
        # a request that held the old release finishes on it
        cols, n = columns(files)
        assert old.infer(cols, n_rows=n).release == "fraud:1"
        await asyncio.sleep(0.2)
        await asyncio.to_thread(registry.rollback, "fraud")
        rolled_back = await time_to_serve(repo, "fraud:1")
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*workers)  # re-raises any failed request
        await repo.stop()
        return promoted, rolled_back, seen

    promoted, rolled_back, seen = asyncio.run(main())
    # Picked up on its own (poll 0.5 s; 0.2-0.6 s measured on a quiet machine): the bound
    # only says "by itself", it is no speed target (a loaded CI machine took 2.4 s).
    assert promoted < NOTICED_S and rolled_back < NOTICED_S, (promoted, rolled_back)
    # one switch each way: no request went back to the old release once the new one served
    changes = [b for a, b in zip(seen, seen[1:], strict=False) if a != b]
    assert changes == ["fraud:2", "fraud:1"], changes
    assert metrics.get_sample_value("headrace_model_swaps_total", {"outcome": "ok"}) == 2
    assert metrics.get_sample_value("headrace_pool_cold_loads_total") == 0


def test_alias_moved_to_a_broken_release_keeps_the_old_one(
    sqlite_registry: Registry, tmp_path: Path
) -> None:
    _, files = register_sklearn(sqlite_registry, tmp_path, seed=7)
    broken, _ = register_sklearn(sqlite_registry, tmp_path, seed=8, alias=None)
    corrupt(sqlite_registry, broken, tmp_path)
    metrics = CollectorRegistry()

    async def main() -> None:
        repo = ModelRepository(sqlite_registry, poll_interval_s=0.1, metrics_registry=metrics)
        await repo.start()
        await wait_until(lambda: repo.is_ready("fraud"))
        await asyncio.to_thread(sqlite_registry.set_alias, "fraud", "champion", 2)
        await wait_until(
            lambda: (
                metrics.get_sample_value("headrace_model_swaps_total", {"outcome": "failed"}) == 1
            )
        )
        assert (await repo.get("fraud")).release == "fraud:1"
        states = {(s.version, s.state): s.reason for s in repo.index()}
        assert ("1", "READY") in states and "corrupted" in states[("2", "UNAVAILABLE")]
        await repo.stop()

    asyncio.run(main())


def test_registry_reports_alias_revision_targets_and_notifies(
    registry: Registry, tmp_path: Path
) -> None:
    assert registry.alias_revision() == 0 and registry.alias_targets() == {}
    register_sklearn(registry, tmp_path, seed=7)
    register_sklearn(registry, tmp_path, seed=8, alias=None)
    first = registry.alias_revision()
    assert first > 0 and registry.alias_targets() == {"fraud": 1}
    if not registry.url.startswith("postgresql"):
        registry.set_alias("fraud", "champion", 2)
        assert registry.alias_revision() > first
        assert registry.alias_targets("shadow") == {}
        return
    import psycopg

    from headrace.registry import ALIAS_CHANNEL
    from headrace.serving._watch import postgres_dsn

    dsn = postgres_dsn(registry.url)
    assert dsn is not None
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"LISTEN {ALIAS_CHANNEL}")
        registry.set_alias("fraud", "champion", 2)
        payloads = [n.payload for n in conn.notifies(timeout=5, stop_after=1)]
    assert payloads == ["fraud@champion:2"]
    assert registry.alias_revision() > first


@pytest.mark.postgres
def test_a_lost_notification_session_reconnects(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from headrace.serving import _watch

    monkeypatch.setattr(_watch, "_RECONNECT_S", 0.1)
    with local_registry(tmp_path, url=postgres_url) as registry:
        register_sklearn(registry, tmp_path, seed=7)
        register_sklearn(registry, tmp_path, seed=8, alias=None)
        dsn = _watch.postgres_dsn(registry.url)
        assert dsn is not None

        def kill_listener() -> int:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
                ).fetchone()
            return int(row[0]) if row else 0

        async def main() -> float:
            repo = ModelRepository(registry, poll_interval_s=60.0)
            await repo.start()
            watcher = repo._watcher
            assert watcher is not None
            await wait_until(lambda: watcher.listening)
            assert await asyncio.to_thread(kill_listener) == 1
            await wait_until(lambda: not watcher.listening)
            await wait_until(lambda: watcher.listening)  # reconnected
            await asyncio.to_thread(registry.set_alias, "fraud", "champion", 2)
            took = await time_to_serve(repo, "fraud:2")
            await repo.stop()
            return took

        assert asyncio.run(main()) < NOTICED_S
