"""`iter_input_chunks`: what an unreadable file says, and how JSON lines are chunked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from headrace.errors import InputFileError
from headrace.inference.readers import iter_input_chunks


def test_input_file_errors(tmp_path: Path) -> None:
    with pytest.raises(
        InputFileError, match=r"unknown extension '\.txt'; use one of \.csv, \.parquet"
    ):
        list(iter_input_chunks(tmp_path / "x.txt"))
    with pytest.raises(InputFileError, match=r"Input file '.*nope\.csv' not found: check the path"):
        list(iter_input_chunks(tmp_path / "nope.csv"))
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(InputFileError, match="is a directory"):
        list(iter_input_chunks(folder))
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match="is empty: there is nothing to score"):
        list(iter_input_chunks(empty))
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    with pytest.raises(InputFileError, match=r"'.*fake\.parquet' is not a readable Parquet file"):
        list(iter_input_chunks(fake))
    duplicate = tmp_path / "dup.csv"
    duplicate.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(InputFileError, match="names column 'a' twice"):
        list(iter_input_chunks(duplicate))
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"a,b\n1,\xe9\n")
    with pytest.raises(InputFileError, match=r"Cannot read CSV file '.*latin\.csv' after 0 rows"):
        list(iter_input_chunks(latin))
    latin_header = tmp_path / "latin_header.csv"
    latin_header.write_bytes(b"\xe9,b\n1,2\n")
    with pytest.raises(InputFileError, match="is not UTF-8 text"):
        list(iter_input_chunks(latin_header))
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n")
    with pytest.raises(InputFileError, match="has no header line"):
        list(iter_input_chunks(blank))


def test_jsonl_chunks_count_rejected_lines(tmp_path: Path) -> None:
    lines = ["{not json", "[1]", json.dumps({"a": 1}), "", "oops", json.dumps({"a": 2})]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    chunks = list(iter_input_chunks(source, chunk_rows=2))
    assert [chunk.n_read for chunk in chunks] == [2, 2, 1]
    assert [r.row for chunk in chunks for r in chunk.rejections] == [0, 1, 4]
    assert [chunk.file_rows(np.arange(chunk.n_rows)).tolist() for chunk in chunks] == [
        [],
        [2],
        [5],
    ]
    assert chunks[1].columns["a"].tolist() == [1]
