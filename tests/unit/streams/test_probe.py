"""Endpoint probes that need no service: URL and option errors, files, memory.

Probes never raise for a bad endpoint: every case here returns a failed `ProbeResult`
naming the endpoint and what to do. The broker probes against real services live in
``tests/integration/streams/test_probes.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace.streams import ProbeResult, describe_endpoint, probe_endpoint, probe_file


def failed(result: ProbeResult, *parts: str) -> None:
    assert not result.ok, result
    for part in parts:
        assert part in result.detail, result.detail


# --- URLs and options (nothing is contacted) ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://host/events", "Unsupported source URL 'ftp://host/events'"),
        ("events.jsonl", "Unsupported source URL"),
        ("kafka:///events", "names no servers"),
    ],
)
def test_unusable_urls_fail_without_raising(url: str, expected: str) -> None:
    failed(probe_endpoint(url, role="source", topic="t", group="g"), expected)


@pytest.mark.parametrize("url", ["kafka://127.0.0.1:9", "redis://127.0.0.1:9/0", "nats://x:9"])
def test_a_source_or_sink_without_topic_fails_as_it_would_at_start(url: str) -> None:
    for role in ("source", "sink"):
        result = probe_endpoint(url, role=role, topic="", group="g")  # type: ignore[arg-type]
        failed(result, "needs a")


def test_memory_endpoints_are_always_usable() -> None:
    result = probe_endpoint("memory://default", role="source", topic="events", group="g")
    assert result.ok and result.endpoint == "memory://default topic 'events'"


def test_endpoints_are_named_without_their_password() -> None:
    assert describe_endpoint("redis://:hunter2@db:6379/0", "events") == (
        "redis://:***@db:6379/0 topic 'events'"
    )
    result = probe_endpoint(
        "redis://:hunter2@127.0.0.1:6379/0", role="sink", topic="t", options={"bogus": 1}
    )
    assert "hunter2" not in result.endpoint + result.detail


def test_kafka_options_that_would_break_delivery_fail_before_any_connection() -> None:
    # Port 9 (discard) is never a broker: passing means no connection was attempted.
    source = probe_endpoint(
        "kafka://127.0.0.1:9",
        role="source",
        topic="t",
        group="g",
        options={"enable.auto.commit": True},
    )
    failed(source, "'enable.auto.commit=True' would break at-least-once")
    sink = probe_endpoint(
        "kafka://127.0.0.1:9", role="sink", topic="t", options={"bootstrap.servers": "x:1"}
    )
    failed(sink, "'bootstrap.servers' is set by headrace itself")


def test_a_missing_kafka_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # makes the import fail
    result = probe_endpoint("kafka://127.0.0.1:9", role="source", topic="t", group="g")
    failed(result, "pip install 'headrace[kafka]'")


def test_unknown_redis_and_nats_options_are_named() -> None:
    redis = probe_endpoint(
        "redis://127.0.0.1:9/0", role="source", topic="s", group="g", options={"bogus": 1}
    )
    failed(redis, "unknown option(s) ['bogus']")
    nats = probe_endpoint("nats://127.0.0.1:9", role="sink", topic="a.b", options={"bogus": 1})
    failed(nats, "unknown option(s) ['bogus']")
    failed(probe_endpoint("nats://127.0.0.1:9", role="sink", topic=""), "needs a subject")


# --- files -----------------------------------------------------------------------------


def test_file_source_readable_with_a_writable_checkpoint(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"id": 1}\n')
    result = probe_file(f"file://{events}", role="source", group="scoring")
    assert result.ok, result
    assert "jsonl, 10 bytes, readable" in result.detail
    assert f"checkpoint {events}.scoring.offset not written yet" in result.detail
    assert not (tmp_path / "events.jsonl.scoring.offset").exists()


def test_file_source_missing_or_unwritable_checkpoint_fails(tmp_path: Path) -> None:
    failed(
        probe_file(f"file://{tmp_path / 'nope.jsonl'}", role="source", group="g"),
        "nope.jsonl does not exist or is not a file",
    )
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = probe_file(
        f"file://{events}", role="source", options={"checkpoint": str(blocker / "ckpt")}
    )
    failed(result, "cannot be written", "is not a directory", "set the option checkpoint")


def test_file_source_bad_options_are_named(tmp_path: Path) -> None:
    failed(
        probe_file(f"file://{tmp_path / 'e.jsonl'}", role="source", options={"format": "xml"}),
        "format='xml' is not one of jsonl, csv, parquet",
    )
    failed(
        probe_file(f"file://{tmp_path / 'e.jsonl'}", role="source", group="a/b"),
        "cannot name a checkpoint file",
    )


def test_file_sink_in_new_directories_is_reported_and_not_created(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "scores.jsonl"
    result = probe_file(f"file://{target}", role="sink")
    assert result.ok and "will be created" in result.detail, result
    assert not (tmp_path / "new").exists()


def test_file_sink_that_cannot_be_written_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    failed(probe_file(f"file://{blocker}/out.jsonl", role="sink"), "is not a directory")
    (tmp_path / "out.jsonl").mkdir()
    failed(probe_file(f"file://{tmp_path}/", role="sink", topic="out.jsonl"), "is a directory")
    failed(probe_file(f"file://{tmp_path}/", role="sink"), "names a directory")


def test_existing_parquet_sink_needs_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"a": [1]}), target)
    failed(probe_file(f"file://{target}", role="sink"), "set the option overwrite: true")
    assert probe_file(f"file://{target}", role="sink", options={"overwrite": True}).ok
