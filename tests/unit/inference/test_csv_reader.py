"""The CSV reader numbers every data row, through quoted newlines and malformed rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headrace.inference.readers import iter_input_chunks


def test_csv_row_numbers_survive_quoted_newlines_and_bad_rows(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text('a,b\n1,"x\ny"\n2\n3,z\n\n4,"p\nq\nr"\n5,6,7\n8,w\n9,"m\nn",3\n10,v\n')
    chunks = list(iter_input_chunks(source, chunk_rows=2))
    rows: list[int] = []
    bad: list[int] = []
    values: list[str] = []
    for chunk in chunks:
        assert chunk.coerce_strings and chunk.n_rows <= 2
        rows += chunk.file_rows(np.arange(chunk.n_rows)).tolist()
        bad += [r.row for r in chunk.rejections]
        values += chunk.columns["a"].tolist()
    # data rows: 0 '1', 1 bad, 2 '3', 3 blank line, 4 '4', 5 bad, 6 '8', 7 bad, 8 '10'
    assert rows == [0, 2, 3, 4, 6, 8] and bad == [1, 5, 7]
    assert values == ["1", "3", "", "4", "8", "10"]


def test_csv_many_bad_rows_across_blocks(tmp_path: Path) -> None:
    lines = ["a,b"] + [("1,2" if i % 97 else "1") for i in range(20_000)]
    source = tmp_path / "big.csv"
    source.write_text("\n".join(lines) + "\n")
    good: list[int] = []
    bad: list[int] = []
    for chunk in iter_input_chunks(source, chunk_rows=5000):
        good += chunk.file_rows(np.arange(chunk.n_rows)).tolist()
        bad += [r.row for r in chunk.rejections]
    assert bad == [i for i in range(20_000) if i % 97 == 0]
    assert sorted(good + bad) == list(range(20_000))
    assert good == sorted(good)
