"""Defect 5 (issue 10): a cache file swapped after its check is never loaded.

The gap between hashing a cached file and unpickling it is hooked deterministically: the
verification step is wrapped so that, right after it hashed the cache file, the file is
replaced by a malicious pickle. Loading must still run the verified bytes.
"""

from __future__ import annotations

import importlib
import itertools
import os
import pickle
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from headrace.errors import ArtifactIntegrityError
from headrace.inference.loading import service_for_release
from headrace.registry import Registry, Release
from headrace.registry import store as store_module
from headrace.serving._loading import load_release, prepare_release
from support.models import ModelFiles, draft_from, local_registry, write_sklearn_release


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with local_registry(tmp_path) as opened:
        yield opened


@pytest.fixture
def files(tmp_path: Path) -> ModelFiles:
    return write_sklearn_release(tmp_path / "model")


def _as_a_new_process(release: Release) -> None:
    """Drop this process's verified copy, as a fresh worker would not have one."""
    copies = getattr(store_module, "_COPIES", None)
    if copies is not None:
        copies.forget(release.digest)


def _cached_model(registry: Registry, release: Release) -> Path:
    return registry.cache_dir / release.digest / "model.pkl"


def _swap(target: Path, marker: Path) -> None:
    """Replace `target` the way an attacker would: a new file renamed over it."""
    forged = target.with_name(".forged")
    forged.write_bytes(pickle.dumps(_Evil(marker)))
    os.replace(forged, target)


def _swap_after_verification(
    monkeypatch: pytest.MonkeyPatch, target: Callable[[], Path], marker: Path
) -> list[int]:
    """Wrap every function that hashes a cached file so it swaps the file just after."""
    swaps: list[int] = []
    modules = [store_module, importlib.import_module("headrace.registry._copies")]
    for module, name in itertools.product(modules, ("file_sha256", "copy_verified")):
        original = getattr(module, name, None)
        if original is None:
            continue

        def hooked(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            result = _original(*args, **kwargs)
            path = target()
            if path.is_file():
                _swap(path, marker)
                swaps.append(1)
            return result

        monkeypatch.setattr(module, name, hooked)
    return swaps


def _scores(files: ModelFiles, service: Any) -> np.ndarray:
    columns = {f"f{i}": files.features[:, i] for i in range(files.features.shape[1])}
    result = service.infer(columns, n_rows=len(files.features))
    return np.asarray(result.scores)


def test_worker_path_loads_the_verified_bytes(
    registry: Registry, files: ModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = registry.register(draft_from(files, tmp_path))
    registry.fetch(release)  # the cache is warm: the next load checks, then loads
    registry.clear_cache(release)
    registry.fetch(release)
    _as_a_new_process(release)
    marker = tmp_path / "evil-ran"
    swaps = _swap_after_verification(monkeypatch, lambda: _cached_model(registry, release), marker)
    service = service_for_release(registry, release)
    assert swaps, "the hook never ran: the test no longer exercises the gap"
    assert not marker.exists()
    import joblib

    expected = joblib.load(files.model).predict_proba(files.features)[:, 1]
    np.testing.assert_allclose(_scores(files, service), expected)


def test_server_path_prepare_then_load_ignores_a_swap(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    release = registry.register(draft_from(files, tmp_path))
    prepared = prepare_release(registry, release)
    marker = tmp_path / "evil-ran"
    _swap(_cached_model(registry, release), marker)  # in the gap the server leaves
    served = load_release(registry, release, prepared=prepared)
    assert not marker.exists()
    assert served.release.digest == release.digest


def test_a_swapped_cache_file_is_refused_by_a_new_process(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    release = registry.register(draft_from(files, tmp_path))
    registry.fetch(release)
    _as_a_new_process(release)
    marker = tmp_path / "evil-ran"
    _swap(_cached_model(registry, release), marker)
    with pytest.raises(ArtifactIntegrityError, match="model.pkl"):
        registry.fetch(release)
    assert not marker.exists()


def test_private_copy_is_unreachable_by_others(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    release = registry.register(draft_from(files, tmp_path))
    root = registry.fetch(release)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "model.pkl").stat().st_mode) == 0o400
    assert not root.is_relative_to(registry.cache_dir)
    registry.clear_cache(release)
    assert not root.exists()


def test_a_forked_child_leaves_its_parents_copies_alone(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    release = registry.register(draft_from(files, tmp_path))
    root = registry.fetch(release)
    pid = os.fork()
    if pid == 0:  # the child: its own copy, and its exit handlers remove only that
        try:
            child_root = registry.fetch(release)
            store_module._COPIES.clear()
            os._exit(0 if child_root != root and root.is_dir() else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (root / "model.pkl").is_file()
