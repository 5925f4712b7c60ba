"""Properties of every YAML config loader: a valid object or one line of HeadraceError.

For arbitrary text (random, and built from YAML's own punctuation so anchors, aliases,
tags, flow collections and block scalars come up) and for structurally valid documents
whose values are hostile (NaN, infinities, huge and negative numbers, newlines, nesting,
wrong types, ``${VAR}``), the pipeline-spec, serve-config, schema, release-config and
feature-spec loaders either return their object or raise a `HeadraceError` whose message
is one line. Never another exception, never a traceback. Examples are bounded so CI
runs them in seconds; raise ``HEADRACE_PROPERTY_EXAMPLES`` by hand for a longer search.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.errors import HeadraceError
from headrace.pipeline.spec import load_pipeline_spec
from headrace.release.config import load_config
from headrace.release.features import load_features
from headrace.release.schema import load_schema
from headrace.serving.config import load_serve_spec

EXAMPLES = int(os.environ.get("HEADRACE_PROPERTY_EXAMPLES", "100"))
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

Loader = Callable[[Path], object]
LOADERS: dict[str, Loader] = {
    "pipeline": load_pipeline_spec,
    "serve": load_serve_spec,
    "schema": load_schema,
    "config": load_config,
    "features": load_features,
}

VALID: dict[str, dict[str, Any]] = {
    "pipeline": {
        "name": "p",
        "model": "fraud@champion",
        "source": {"url": "memory://b/in", "topic": "in", "group": "g"},
        "outputs": [{"url": "memory://b/out", "topic": "out"}],
        "dead_letter": {"url": "memory://b/dlq"},
        "batch": {"max_size": 64, "max_wait_ms": 2.0, "settle_ms": 50.0, "max_in_flight": 1000},
        "dedupe": {"url": "memory://", "ttl_s": 60.0, "max_keys": 100},
        "limits": {"max_event_bytes": 1024},
        "shutdown_timeout_s": 5.0,
        "tracing": {"sample_ratio": 0.1},
        "samples": {"ratio": 0.1, "roll_mb": 1.0, "roll_s": 10.0, "max_buffer": 10},
        "feedback": {"url": "memory://b/labels", "ttl_s": 60.0, "window": 10},
        "drift": {"window": 100, "stride": 50, "target_run_length": 1000, "seed": 1},
    },
    "serve": {
        "host": "127.0.0.1",
        "port": 0,
        "models": ["fraud"],
        "memory_budget_mb": 512.0,
        "overcommit": 1.5,
        "poll_interval_s": 1.0,
        "batching": {"max_batch_size": 8, "max_batch_time_ms": 1.0, "mode": "auto"},
        "limits": {"max_body_bytes": 4096, "timeout_s": 5.0},
        "auth": {"inference_token": "0123456789abcdef0123"},
        "tracing": {"sample_ratio": 0.5},
    },
    "schema": {
        "fields": [
            {"name": "amount", "type": "float", "min": 0, "max": 1000},
            {"name": "kind", "type": "category", "values": ["a", "b"]},
        ]
    },
    "config": {"threshold": 0.5, "labels": ["legit", "fraud"]},
    "features": {"inputs": ["amount"], "definitions": {}},
}

HOSTILE = st.one_of(
    st.sampled_from(
        [
            float("nan"),
            float("inf"),
            float("-inf"),
            -1,
            0,
            -1e308,
            1e308,
            2**63,
            -(2**63) - 1,
            10**40,
            True,
            None,
            "",
            "a\nb",
            "${HEADRACE_PROPERTY_UNSET}",
            "${HEADRACE_PROPERTY_UNSET:-}",
            "u:S3cr3t/Pw@host",
            "x" * 5000,
            [],
            {},
            [[[[[[[[[[[]]]]]]]]]]],
        ]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)

YAML_PIECES = st.sampled_from(
    [
        "a", "b", "1", "-1", ".nan", ".inf", "-.inf", "1e400", "0x1F", "0o7", "~", "null",
        "true", "2026-02-30", "2001-12-14t21:59:43.10-05:00", ":", ": ", "- ", "-", "[", "]",
        "{", "}", ",", "&a ", "*a", "&b ", "*b", "!!str ", "!!binary ", "!!python/name:os.system ",
        "!!set ", "!!omap ", "!!timestamp ", "!!int ", "!!float ", "<<: ", "? ", "|", ">", "'",
        '"', "#", "%YAML 1.1\n", "---\n", "...\n", "\n", "  ", "\t", "\\", "${X}", "name",
        "model", "source", "url", "fields", "port", "batching", "\ufeff", "\x00", "\u2028",
    ]
)  # fmt: skip


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="headrace-props-") as directory:
        yield Path(directory)


def check(loader: Loader, path: Path) -> None:
    """The property: an object, or a one-line HeadraceError."""
    try:
        loader(path)
    except HeadraceError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        assert "Traceback" not in message


def write(workdir: Path, kind: str, content: str | bytes) -> Path:
    path = workdir / f"{kind}.yaml"
    path.write_bytes(
        content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    )
    return path


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_the_valid_documents_load(workdir: Path, kind: str) -> None:
    LOADERS[kind](write(workdir, kind, yaml.safe_dump(VALID[kind])))


@pytest.mark.parametrize("kind", sorted(LOADERS))
@PROFILE
@given(text=st.text(max_size=200))
def test_arbitrary_text(workdir: Path, kind: str, text: str) -> None:
    check(LOADERS[kind], write(workdir, kind, text))


@pytest.mark.parametrize("kind", sorted(LOADERS))
@PROFILE
@given(pieces=st.lists(YAML_PIECES, max_size=40))
def test_yaml_shaped_text(workdir: Path, kind: str, pieces: list[str]) -> None:
    check(LOADERS[kind], write(workdir, kind, "".join(pieces)))


def _leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into `value` (mappings and lists), the containers included."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _leaf_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += _leaf_paths(child, (*prefix, index))
    return paths


@pytest.mark.parametrize("kind", sorted(LOADERS))
@PROFILE
@given(data=st.data())
def test_valid_structure_with_hostile_values(workdir: Path, kind: str, data: st.DataObject) -> None:
    document = copy.deepcopy(VALID[kind])
    paths = [p for p in _leaf_paths(document) if p]
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
        target: Any = document
        try:
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = data.draw(HOSTILE)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    text = yaml.safe_dump(document, allow_unicode=True)
    check(LOADERS[kind], write(workdir, kind, text))
