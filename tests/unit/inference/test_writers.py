"""`OutputWriter` streams chunks to a ``.partial`` file and names it only on close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headrace.inference.writers import OutputWriter
from support.tables import read_rows


@pytest.mark.parametrize("ext", [".jsonl", ".csv", ".parquet"])
def test_output_writer_streams_chunks(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"w{ext}"
    with OutputWriter(path, columns=["row", "field"]) as writer:
        writer.write({"row": np.array([0, 1]), "field": np.array([None, None], dtype=object)})
        assert not path.exists()
        writer.write({"row": np.array([5]), "field": np.array(["x"], dtype=object)})
    assert read_rows(path) == [
        {"row": 0, "field": None},
        {"row": 1, "field": None},
        {"row": 5, "field": "x"},
    ]


def test_output_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.parquet"
    with pytest.raises(RuntimeError), OutputWriter(path, columns=["row"]) as writer:
        writer.write({"row": np.array([1])})
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
