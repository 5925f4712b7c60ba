"""The demo's OIP client: what it records for failed requests, and where it may connect."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from headrace.demo import ServedAnswer, ServingReport, ask_server, generate, serve_beside_stream
from headrace.registry import Registry


def test_the_client_talks_to_loopback_only() -> None:
    with pytest.raises(ValueError, match=r"own server only, not http://example\.org"):
        ask_server("http://example.org", generate(3, seed=1), singles=1, batch_rows=2)


def test_an_unreachable_server_is_an_answer_with_the_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        report = ask_server(
            f"http://127.0.0.1:{port}", generate(3, seed=1), singles=2, batch_rows=3, pause_s=0
        )
    assert [(a.rows, a.status) for a in report.answers] == [(1, 0), (1, 0), (3, 0)]
    assert all(a.error.startswith("no answer:") and not a.scores for a in report.answers)
    assert report.batch_agrees() is False


def _ok(rows: int, scores: list[float]) -> ServedAnswer:
    predictions = ["fraud" if s >= 0.5 else "legit" for s in scores]
    return ServedAnswer(
        rows=rows,
        status=200,
        latency_ms=1.0,
        predictions=predictions,
        scores=scores,
        release="fraud:1",
    )


def test_batch_agrees_compares_each_single_with_its_batch_row() -> None:
    report = ServingReport(url="http://127.0.0.1:1", model="fraud")
    report.answers = [_ok(1, [0.25]), _ok(1, [0.75]), _ok(3, [0.25, 0.75, 0.5])]
    assert report.batch_agrees() is True
    report.answers[2] = _ok(3, [0.25, 0.7, 0.5])
    assert report.batch_agrees() is False


def test_without_the_server_extra_the_demo_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` now fails
    with Registry(
        f"sqlite:///{tmp_path / 'registry.db'}",
        artifacts=f"file://{tmp_path / 'artifacts'}",
        actor="test",
        cache_dir=tmp_path / "cache",
    ) as registry:
        serving = serve_beside_stream(registry, generate(3, seed=1))
    assert serving.skipped == (
        "Package 'uvicorn' is missing: run pip install 'headrace[server]' to use headrace serve"
    )
    assert serving.finish() is None
