"""Files as streams: the conformance suite, checkpoints, replay, formats and their errors."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrace.errors import ConfigError, SinkError, SourceError
from headrace.streams import FileSink, FileSource, Message, OutRecord, open_sink, open_source
from headrace.streams.file import (
    CONTENT_TYPE_HEADER,
    CSV_CONTENT_TYPE,
    CSV_ERROR_HEADER,
    checkpoint_path,
)
from support.stream_conformance import Backend, StreamConformance


class FileBackend:
    """JSONL files in a temporary directory, reached through ``file://`` URLs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def new_topic(self, *, partitions: int = 1) -> str:
        path = self.directory / f"topic-{uuid.uuid4().hex[:8]}.jsonl"
        path.touch()
        return str(path)

    def make_source(self, topic: str, *, group: str) -> FileSource:
        return FileSource(f"file://{topic}", group=group)

    def make_sink(self, topic: str) -> FileSink:
        return FileSink(f"file://{topic}")

    def read_all(self, topic: str, *, expected: int, timeout: float) -> list[Message]:
        lines = Path(topic).read_bytes().splitlines()
        return [Message(value=line, topic=topic, offset=i) for i, line in enumerate(lines)]

    def produce(
        self, topic: str, values: Sequence[bytes], *, keys: Sequence[bytes] | None = None
    ) -> None:
        with Path(topic).open("ab") as out:
            out.write(b"".join(v + b"\n" for v in values))


class TestFileStream(StreamConformance):
    """Every promise of the contract a file can keep (it has no keys, headers, partitions)."""

    unsupported = {
        "keys": "JSONL files hold values only",
        "headers": "JSONL files hold values only",
        "partitions": "a file is one partition",
        "shared_groups": "every reader of a file reads all of it; a group names a checkpoint",
    }

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return FileBackend(tmp_path)


def write_lines(path: Path, lines: Sequence[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def read(source: FileSource, *, max_messages: int = 100) -> list[Message]:
    got: list[Message] = []
    while batch := source.poll(max_messages=max_messages, timeout=0):
        got.extend(batch)
    return got


def opened(
    url: str | Path, *, group: str | None = None, options: dict[str, object] | None = None
) -> FileSource:
    source = FileSource(url, group=group, options=options)
    source.open()
    return source


# --- JSONL ---------------------------------------------------------------------------


def test_jsonl_lines_pass_through_raw_even_when_not_json(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "events.jsonl",
        [b'{"id": 1}', b"not json at all", b"", b'{"id": 2, "s": "caf\xc3\xa9"}', b"\xff\xfe"],
    )
    source = opened(path, group="g")
    got = read(source)
    source.close()
    assert [(m.offset, m.value) for m in got] == [
        (0, b'{"id": 1}'),
        (1, b"not json at all"),
        (3, b'{"id": 2, "s": "caf\xc3\xa9"}'),
        (4, b"\xff\xfe"),
    ]
    assert got[1].position == f"{path}[0]@1"
    assert all(m.key is None and m.headers == [] for m in got)


def test_jsonl_crlf_bom_and_unterminated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "windows.ndjson"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\r\n{"a": 3}')
    source = opened(f"file://{path}")
    assert [m.value for m in read(source)] == [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}']
    source.close()


def test_exhausted_turns_true_at_the_end(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "e.jsonl", [b"1", b"2", b"3"])
    source = opened(path, group="g")
    assert not source.exhausted
    assert len(source.poll(max_messages=3, timeout=1)) == 3
    assert not source.exhausted  # the end is known only once a poll finds nothing more
    started = time.monotonic()
    assert source.poll(max_messages=3, timeout=5) == []
    assert time.monotonic() - started < 1  # no waiting at the end of a file
    assert source.exhausted
    source.close()


def test_checkpoint_resume_after_restart(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "e.jsonl", [str(i).encode() for i in range(10)])
    first = opened(f"file://{path}", group="scorer")
    batch = first.poll(max_messages=4, timeout=0)
    first.commit(batch)
    first.poll(max_messages=4, timeout=0)  # read but never committed: a crash
    first.close()
    checkpoint = checkpoint_path(path, "scorer")
    assert checkpoint == tmp_path / "e.jsonl.scorer.offset"
    assert orjson.loads(checkpoint.read_bytes())["offset"] == 4
    assert not list(tmp_path.glob("*.tmp"))

    second = opened(f"file://{path}", group="scorer")
    assert second.committed == 4
    assert [m.offset for m in read(second)] == list(range(4, 10))
    second.close()
    other = opened(f"file://{path}", group="auditor")  # another group: its own checkpoint
    assert [m.offset for m in read(other)] == list(range(10))
    other.close()


def test_replay_from_offset_overrides_the_checkpoint(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "e.jsonl", [str(i).encode() for i in range(6)])
    first = opened(path, group="g")
    first.commit(read(first))
    first.close()
    replay = open_source(f"file://{path}", group="g", options={"start": "2"})
    assert isinstance(replay, FileSource)
    replay.open()
    got = read(replay)
    assert [m.offset for m in got] == [2, 3, 4, 5]
    replay.commit(got[:1])
    replay.close()
    assert orjson.loads(checkpoint_path(path, "g").read_bytes())["offset"] == 3


def test_follow_waits_for_appended_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "live.jsonl", [b"1"])
    source = opened(path, group="g", options={"follow": "true"})
    assert [m.value for m in source.poll(max_messages=10, timeout=0)] == [b"1"]
    with path.open("ab") as out:
        out.write(b'{"half": ')  # a writer mid-line: not an event yet
        out.flush()
        assert source.poll(max_messages=10, timeout=0.1) == []

        def finish() -> None:
            out.write(b'"done"}\n')
            out.flush()

        timer = threading.Timer(0.1, finish)
        timer.start()
        got = source.poll(max_messages=10, timeout=5)
        timer.join()
    assert [(m.offset, m.value) for m in got] == [(1, b'{"half": "done"}')]
    assert not source.exhausted
    source.close()


def test_unreadable_checkpoint_says_how_to_recover(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "e.jsonl", [b"1"])
    checkpoint_path(path, "g").write_text("garbage")
    with pytest.raises(SourceError, match=r"e\.jsonl\.g\.offset .*unreadable.*delete it"):
        FileSource(path, group="g").open()


def test_missing_file_and_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope\.jsonl does not exist"):
        FileSource(tmp_path / "nope.jsonl").open()
    with pytest.raises(ConfigError, match=r"cannot tell the format from '\.txt'"):
        FileSource(tmp_path / "e.txt")
    with pytest.raises(ConfigError, match="unknown options \\['speed'\\]"):
        FileSource(tmp_path / "e.jsonl", options={"speed": 2})
    with pytest.raises(ConfigError, match="a file has no time index"):
        FileSource(tmp_path / "e.jsonl", options={"start": "2024-01-01T00:00:00"})
    with pytest.raises(ConfigError, match="group 'a/b' cannot name a checkpoint"):
        FileSource(tmp_path / "e.jsonl", group="a/b")
    with pytest.raises(ConfigError, match="names a directory: give the file name"):
        FileSource(f"file://{tmp_path}/")


def test_directory_url_takes_the_file_name_from_the_topic(tmp_path: Path) -> None:
    write_lines(tmp_path / "events.jsonl", [b"1"])
    source = open_source(f"file://{tmp_path}", topic="events.jsonl", group="g")
    source.open()
    assert [m.topic for m in source.poll(max_messages=1, timeout=0)] == [
        str(tmp_path / "events.jsonl")
    ]
    source.close()


# --- CSV -----------------------------------------------------------------------------


def test_csv_rows_become_json_objects_of_strings(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_bytes(
        b'\xef\xbb\xbfevent_id,amount,note\r\ne1,12.5,""\r\ne2,7,"two\nlines, quoted"\r\n\r\n'
        b"e3,1\r\ne4,3,ok\r\n"
    )
    source = opened(path, group="g")
    got = read(source)
    source.close()
    assert [m.offset for m in got] == [0, 1, 3, 4]  # the blank record keeps its number
    assert orjson.loads(got[0].value) == {"event_id": "e1", "amount": "12.5", "note": ""}
    assert orjson.loads(got[1].value)["note"] == "two\nlines, quoted"
    assert got[0].headers == [(CONTENT_TYPE_HEADER, CSV_CONTENT_TYPE)]
    # A row with the wrong number of cells is passed on raw, with the reason.
    assert got[2].value == b"e3,1"
    assert got[2].headers == [(CSV_ERROR_HEADER, b"row has 2 cells, the header has 3")]
    assert orjson.loads(got[3].value) == {"event_id": "e4", "amount": "3", "note": "ok"}


def test_csv_resume_and_tsv(tmp_path: Path) -> None:
    path = tmp_path / "tx.tsv"
    path.write_text("a\tb\n1\t2\n3\t4\n5\t6\n")
    first = opened(path, group="g")
    first.commit(first.poll(max_messages=2, timeout=0))
    first.close()
    second = opened(path, group="g")
    assert [orjson.loads(m.value) for m in read(second)] == [{"a": "5", "b": "6"}]
    second.close()


def test_csv_row_with_invalid_utf8_is_passed_on_raw(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"name\ncaf\xe9\n")
    source = opened(path)
    (message,) = read(source)
    source.close()
    assert message.value == b"caf\xe9"
    assert message.headers == [(CSV_ERROR_HEADER, b"row is not valid UTF-8")]


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"a,,c", "column 2 of the header row has no name"),
        (b"a,b,a", "column 'a' appears twice in the header row"),
        (b"", "the first row is empty"),
    ],
)
def test_malformed_csv_header_names_the_file(tmp_path: Path, header: bytes, problem: str) -> None:
    path = write_lines(tmp_path / "bad.csv", [header, b"1,2,3"])
    source = opened(path)
    with pytest.raises(SourceError, match=rf"CSV file {path}: {problem}"):
        source.poll(max_messages=10, timeout=0)
    source.close()


def test_malformed_csv_row_names_file_and_offset(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "nul.csv", [b"a,b", b"1,2", b"3," + b"x" * 200_000])
    source = opened(path)
    assert len(source.poll(max_messages=1, timeout=0)) == 1
    with pytest.raises(SourceError, match=rf"CSV file {path} is malformed at {path}\[0\]@1"):
        source.poll(max_messages=10, timeout=0)
    source.close()


def test_empty_csv_is_an_empty_stream(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.touch()
    source = opened(path)
    assert source.poll(max_messages=10, timeout=0) == []
    assert source.exhausted
    source.close()


# --- Parquet -------------------------------------------------------------------------


def test_parquet_rows_become_json_and_resume_across_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    table = pa.table(
        {
            "id": list(range(10)),
            "amount": [i * 1.5 for i in range(10)],
            "merchant": [f"m{i}" if i % 3 else None for i in range(10)],
        }
    )
    pq.write_table(table, path, row_group_size=3)
    first = opened(path, group="g")
    batch = first.poll(max_messages=4, timeout=0)
    assert orjson.loads(batch[1].value) == {"id": 1, "amount": 1.5, "merchant": "m1"}
    assert orjson.loads(batch[0].value)["merchant"] is None
    first.commit(batch)
    first.close()
    second = opened(f"file://{path}", group="g")
    got = read(second, max_messages=3)
    second.close()
    assert [m.offset for m in got] == list(range(4, 10))
    assert [orjson.loads(m.value)["id"] for m in got] == list(range(4, 10))
    replay = opened(path, options={"start": 7})
    assert [m.offset for m in read(replay)] == [7, 8, 9]
    assert replay.exhausted
    replay.close()


def test_parquet_values_json_cannot_express_directly(tmp_path: Path) -> None:
    path = tmp_path / "types.parquet"
    import datetime as dt
    import decimal

    table = pa.table(
        {
            "price": pa.array([decimal.Decimal("12.34")], pa.decimal128(6, 2)),
            "blob": pa.array([b"\x00\xff"], pa.binary()),
            "text": pa.array([b"plain"], pa.binary()),
            "at": pa.array([dt.datetime(2024, 5, 1, 12, 30)], pa.timestamp("ms")),
            "took": pa.array([dt.timedelta(seconds=1.5)], pa.duration("ms")),
            "tags": pa.array([["a", "b"]]),
        }
    )
    pq.write_table(table, path)
    source = opened(path)
    (message,) = read(source)
    source.close()
    assert orjson.loads(message.value) == {
        "price": 12.34,
        "blob": "AP8=",
        "text": "plain",
        "at": "2024-05-01T12:30:00",
        "took": 1.5,
        "tags": ["a", "b"],
    }


def test_malformed_parquet_names_the_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "broken.parquet", [b'{"this": "is JSON"}'])
    with pytest.raises(SourceError, match=rf"Parquet file {path} cannot be read: .*magic"):
        FileSource(path).open()
    with pytest.raises(ConfigError, match="follow is not possible for Parquet"):
        FileSource(path, options={"follow": True})


# --- sinks ---------------------------------------------------------------------------


def test_jsonl_sink_appends_and_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "out" / "scores.jsonl"  # the directory is created
    for run in range(2):
        sink = open_sink(f"file://{path}")
        sink.open()
        sink.send([OutRecord(value=orjson.dumps({"run": run, "n": n})) for n in range(3)])
        sink.flush(timeout=1)
        sink.close()
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert rows == [{"run": r, "n": n} for r in range(2) for n in range(3)]


def test_jsonl_sink_refuses_values_that_would_split(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "out.jsonl")
    sink.open()
    with pytest.raises(SinkError, match="Record 1 of this batch .* contains a newline"):
        sink.send([OutRecord(value=b"{}"), OutRecord(value=b"a\nb")])
    sink.close()
    assert (tmp_path / "out.jsonl").read_bytes() == b""


def test_parquet_sink_writes_row_groups_and_finishes_on_close(tmp_path: Path) -> None:
    path = tmp_path / "scores.parquet"
    sink = open_sink(f"file://{tmp_path}", topic="scores.parquet")
    sink.open()
    sink.send([OutRecord(value=orjson.dumps({"id": i, "score": i / 10})) for i in range(3)])
    sink.flush(timeout=1)
    sink.send([OutRecord(value=orjson.dumps({"id": 3, "score": None}))])
    sink.flush(timeout=1)
    assert not path.exists()  # readable only once finished
    assert (tmp_path / "scores.parquet.partial").exists()
    sink.send([OutRecord(value=orjson.dumps({"id": 4}))])  # flushed by close
    sink.close()
    sink.close()
    assert not (tmp_path / "scores.parquet.partial").exists()
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    assert pq.read_table(path).to_pylist() == [
        {"id": 0, "score": 0.0},
        {"id": 1, "score": 0.1},
        {"id": 2, "score": 0.2},
        {"id": 3, "score": None},
        {"id": 4, "score": None},
    ]
    source = opened(path)  # the sink's output replays through the source
    assert [orjson.loads(m.value)["id"] for m in read(source)] == [0, 1, 2, 3, 4]
    source.close()


def test_parquet_sink_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    sink = FileSink(path)
    sink.open()
    with pytest.raises(SinkError, match=rf"Record 0 .* {path} is not JSON"):
        sink.send([OutRecord(value=b"nope")])
    with pytest.raises(SinkError, match="is a JSON list, not an object"):
        sink.send([OutRecord(value=b"[1]")])
    sink.send([OutRecord(value=b'{"id": 1}')])
    sink.flush(timeout=1)
    sink.send([OutRecord(value=b'{"id": "x"}')])
    with pytest.raises(SinkError, match=rf"Parquet file {path}: rows 1..2 do not fit"):
        sink.flush(timeout=1)
    sink.send([OutRecord(value=b'{"id": 2, "new": 1}')])
    with pytest.raises(SinkError, match=r"columns \['new'\] the file does not"):
        sink.flush(timeout=1)
    sink.close()
    assert pq.read_table(path).to_pylist() == [{"id": 1}]
    with pytest.raises(ConfigError, match="exists and a Parquet file cannot be appended"):
        FileSink(path).open()
    again = FileSink(path, options={"overwrite": "true"})
    again.open()
    again.close()
    assert pq.read_table(path).num_rows == 0


def test_unopened_and_closed_files_say_so(tmp_path: Path) -> None:
    source = FileSource(write_lines(tmp_path / "e.jsonl", [b"1"]))
    with pytest.raises(SourceError, match="is not open: call open"):
        source.poll(max_messages=1, timeout=0)
    sink = FileSink(tmp_path / "o.jsonl")
    with pytest.raises(SinkError, match="is not open: call open"):
        sink.send([])
    sink.close()
    with pytest.raises(SinkError, match="was closed"):
        sink.open()


def test_unknown_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(ConfigError, match=r"Unsupported source URL 'amqp://x'.*memory://"):
        open_source("amqp://x", topic="t", group="g")
    with pytest.raises(ConfigError, match=r"Unsupported sink URL 'events.jsonl'.*file://"):
        open_sink("events.jsonl")
