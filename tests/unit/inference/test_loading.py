"""Issue 11, one loader: `load_release` is the only way a release is loaded.

The worker, ``headrace predict`` and the server share it, so its options (warm-up rows)
are checked here at their boundaries, and serving is checked to reach the runtimes only
through it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import headrace.serving
from headrace.errors import ConfigError
from headrace.inference import loading
from headrace.registry import Registry, Release
from headrace.serving import _loading as serving_loading
from support.models import local_registry
from support.recording import CALLS_ENV, calls, register_recording_model


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Release, int]]:
    root = tmp_path_factory.mktemp("loading")
    with local_registry(root / "home") as registry:
        release = register_recording_model(registry, root)
        profile = release.manifest.profile
        assert profile is not None and profile.sample is not None
        yield registry, release, profile.sample_rows


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(extra=st.integers(min_value=-3, max_value=3), small=st.integers(min_value=0, max_value=3))
def test_warmup_scores_as_many_reference_rows_as_asked_and_the_sample_has(
    recorder: tuple[Registry, Release, int],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    extra: int,
    small: int,
) -> None:
    registry, release, sample_rows = recorder
    assert sample_rows > 3
    log = tmp_path_factory.mktemp("calls") / "calls.txt"
    monkeypatch.setenv(CALLS_ENV, str(log))
    for rows in (small, sample_rows + extra):  # both ends: none, one, all, more than all
        log.unlink(missing_ok=True)
        loaded = loading.load_release(registry, release, warmup_rows=rows)
        expected = min(rows, sample_rows)
        assert loaded.warmup_rows == expected
        assert [n for n, _ in calls(log)] == ([expected] if expected else [])
        assert (loaded.prediction_dtype is None) == (expected == 0)


def test_a_negative_warmup_is_refused_with_the_value_and_the_fix(
    recorder: tuple[Registry, Release, int],
) -> None:
    registry, release, _ = recorder
    with pytest.raises(ConfigError, match=r"got -1: pass 0 to skip"):
        loading.load_release(registry, release, warmup_rows=-1)


def test_a_reference_loads_like_its_release_and_load_service_does_not_warm_up(
    recorder: tuple[Registry, Release, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, release, _ = recorder
    log = tmp_path / "calls.txt"
    monkeypatch.setenv(CALLS_ENV, str(log))
    loaded = loading.load_release(registry, "recorder@champion")
    assert loaded.release.digest == release.digest
    assert loaded.warmup_rows == min(loading.WARMUP_ROWS, recorder[2])
    log.unlink()
    service = loading.load_service(registry, "recorder@champion")
    assert service.release_digest == release.digest
    assert calls(log) == []


def test_serving_loads_through_the_shared_loader() -> None:
    assert serving_loading.load_release is loading.load_release
    assert serving_loading.prepare_release is loading.prepare_release
    package = Path(headrace.serving.__file__).parent
    direct = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n.startswith("headrace.runtimes.loader") for n in names):
                direct.append(f"{path.name}:{node.lineno}")
    assert direct == [], f"serving imports headrace.runtimes.loader directly at {direct}"
