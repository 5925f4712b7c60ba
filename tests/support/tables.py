"""Reading a written ``.jsonl``, ``.csv`` or ``.parquet`` file back as rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a predictions or rejects file, as dicts (empty CSV values as None)."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".csv":
        options = pacsv.ConvertOptions(strings_can_be_null=True)
        return pacsv.read_csv(path, convert_options=options).to_pylist()  # type: ignore[no-any-return]
    return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
