"""Payload samples: masking, rolled Parquet files, a bounded buffer, failures that cost
only samples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from headrace.errors import ConfigError
from headrace.monitoring.samples import REDACTED, ParquetSampleSink, PayloadSampler, PiiMasker
from headrace.release.schema import Field, Schema

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float"),
        Field(name="count", type="int"),
        Field(name="present", type="bool"),
        Field(name="when", type="timestamp"),
        Field(name="email", type="string", pii=True),
    ]
)


def sampler(tmp_path: Path, **options: Any) -> PayloadSampler:
    sink = ParquetSampleSink(
        tmp_path,
        schema=SCHEMA,
        roll_bytes=options.pop("roll_bytes", 1 << 20),
        roll_s=options.pop("roll_s", 3600.0),
    )
    masker = PiiMasker(SCHEMA, mode="hash", key=b"secret")
    return PayloadSampler(
        SCHEMA, sink=sink, masker=masker, ratio=options.pop("ratio", 1.0), **options
    )


def add(s: PayloadSampler, i: int, **features: Any) -> None:
    row = {
        "amount": 1.5 * i,
        "count": i,
        "present": True,
        "when": "2026-11-22T10:00:00Z",
        "email": f"p{i}@example.org",
    }
    row.update(features)
    s.add(
        event_id=f"e{i}",
        release="r:1",
        at_ms=1,
        source=f"t[0]@{i}",
        features=row,
        prediction="fraud",
        score=0.75,
    )


def test_masks_are_keyed_hashes_or_redactions() -> None:
    hashing = PiiMasker(SCHEMA, mode="hash", key=b"k1")
    other_key = PiiMasker(SCHEMA, mode="hash", key=b"k2")
    assert hashing.fields == {"email"}
    masked = hashing.mask({"email": "a@b.c", "amount": 3.0})
    assert masked["amount"] == 3.0 and masked["email"].startswith("hmac-sha256:")
    assert masked["email"] == hashing.mask_value("a@b.c")  # stable: equal values group
    assert masked["email"] != other_key.mask_value("a@b.c")  # keyed: no dictionary attack
    assert hashing.mask_value(None) is None
    redacting = PiiMasker(SCHEMA, mode="redact")
    assert redacting.mask({"email": "a@b.c"}) == {"email": REDACTED}
    assert redacting.scrub("no customer a@b.c here", {"email": "a@b.c"}) == (
        f"no customer {REDACTED} here"
    )


def test_masking_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="pii mode 'hash' needs a secret key"):
        PiiMasker(SCHEMA, mode="hash")
    with pytest.raises(ConfigError, match="pii mode 'scramble' is not 'hash' or 'redact'"):
        PiiMasker(SCHEMA, mode="scramble")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"sample ratio 1.5 is not within \[0, 1\]"):
        PayloadSampler(
            SCHEMA,
            sink=ParquetSampleSink(Path("/nonexistent"), schema=SCHEMA),
            ratio=1.5,
            masker=PiiMasker(SCHEMA, mode="redact"),
        )


def test_rows_are_typed_and_files_roll_by_size(tmp_path: Path) -> None:
    s = sampler(tmp_path, roll_bytes=1)  # every write fills a file
    add(s, 1)
    s.flush()
    add(s, 2, amount="not a number", count=np.int64(7), present=np.bool_(False))
    s.flush()
    s.close()
    files = sorted(tmp_path.glob("*.parquet"))
    assert len(files) == 2 and not list(tmp_path.glob("*.tmp"))
    first, second = (pq.read_table(f).to_pylist()[0] for f in files)
    assert first["features"] == {
        "amount": 1.5,
        "count": 1,
        "present": True,
        "when": "2026-11-22T10:00:00Z",
        "email": PiiMasker(SCHEMA, mode="hash", key=b"secret").mask_value("p1@example.org"),
    }
    assert (first["outcome"], first["prediction"], first["score"]) == ("output", "fraud", 0.75)
    assert second["features"]["amount"] is None and second["invalid_fields"] == ["amount"]
    assert (second["features"]["count"], second["features"]["present"]) == (7, False)
    assert s.written == 2 and s.dropped == 0


def test_files_roll_by_age_in_the_writer_thread(tmp_path: Path) -> None:
    s = sampler(tmp_path, roll_s=0.05, flush_s=0.02)
    s.start()
    add(s, 1)
    deadline = time.monotonic() + 10
    while not list(tmp_path.glob("*.parquet")):
        assert time.monotonic() < deadline, "no file was rolled"
        time.sleep(0.02)
    add(s, 2)
    s.close()
    rows = [r for f in sorted(tmp_path.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert [r["event_id"] for r in rows] == ["e1", "e2"]


def test_a_full_buffer_drops_and_counts(tmp_path: Path) -> None:
    s = sampler(tmp_path, max_buffer=10)
    for i in range(25):  # the writer is not running: the buffer fills
        add(s, i)
    assert s.dropped == 15
    s.close()
    (file,) = tmp_path.glob("*.parquet")
    assert pq.read_table(file).num_rows == 10


class BrokenSink:
    def write(self, table: Any) -> None:
        raise OSError(28, "No space left on device")

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_failing_sink_costs_samples_only_and_logs_no_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = PayloadSampler(
        SCHEMA, sink=BrokenSink(), ratio=1.0, masker=PiiMasker(SCHEMA, mode="redact")
    )
    add(s, 1, email="secret.person@example.org")
    s.flush()
    assert (s.failed, s.written) == (1, 0)
    assert "No space left on device" in caplog.text
    assert "secret.person" not in caplog.text and "e1" not in caplog.text


def test_choose_keeps_the_ratio(tmp_path: Path) -> None:
    assert sampler(tmp_path, ratio=0.0).choose(100) == []
    assert sampler(tmp_path, ratio=1.0).choose(3) == [0, 1, 2]
    s = sampler(tmp_path, ratio=0.25, seed=5)
    chosen = [s.choose(512) for _ in range(100)]
    assert all(c == sorted(set(c)) and all(0 <= i < 512 for i in c) for c in chosen)
    total = sum(map(len, chosen))
    assert abs(total - 12_800) < 5 * (51_200 * 0.25 * 0.75) ** 0.5


def test_an_undecodable_event_is_sampled_without_features(tmp_path: Path) -> None:
    s = sampler(tmp_path)
    s.add(
        event_id=None,
        release="r:1",
        at_ms=1,
        source="t[0]@9",
        features=None,
        stage="decode",
        error="Invalid JSON: unexpected end of input",
    )
    s.close()
    (row,) = pq.read_table(next(tmp_path.glob("*.parquet"))).to_pylist()
    assert (row["outcome"], row["stage"], row["features"]) == ("dead_letter", "decode", None)


def test_scrub_replaces_quoted_values_but_not_tiny_ones() -> None:
    masker = PiiMasker(SCHEMA, mode="redact")
    # a two-character value would match digits everywhere: it is left alone
    assert masker.scrub("income 12", {"email": "12"}) == "income 12"
    assert masker.scrub("bad value 4150.25", {"email": np.float64(4150.25)}) == (
        f"bad value {REDACTED}"
    )


def test_lost_samples_are_counted_in_metrics(tmp_path: Path) -> None:
    from headrace.monitoring.metrics import SampleMetrics, exposition, new_registry

    registry = new_registry(process=False)
    broken = PayloadSampler(
        SCHEMA, sink=BrokenSink(), ratio=1.0, masker=PiiMasker(SCHEMA, mode="redact"), max_buffer=2
    )
    SampleMetrics(registry, pipeline="p", sampler=broken)
    for i in range(5):  # two buffered, three dropped
        add(broken, i)
    broken.flush()  # the two buffered fail in the sink
    text = exposition(registry)[0].decode()
    assert 'headrace_samples_lost_total{pipeline="p",reason="dropped"} 3.0' in text
    assert 'headrace_samples_lost_total{pipeline="p",reason="failed"} 2.0' in text
    assert 'headrace_samples_written_total{pipeline="p"} 0.0' in text
