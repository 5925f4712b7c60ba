"""Reading the two sides of ``headrace drift check`` from Parquet or CSV files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headrace.errors import InputFileError

__all__ = ["DRIFT_FILE_SUFFIXES", "read_drift_file"]

DRIFT_FILE_SUFFIXES = (".parquet", ".pq", ".csv")
"""File types ``headrace drift check`` reads."""


def read_drift_file(path: Path, *, role: str) -> Any:
    """A pyarrow table of `path`; `role` (``reference``/``current``) names the flag in
    errors, which say what is wrong with which file and what to give instead."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    flag = f"--{role}"
    if not path.exists():
        raise InputFileError(f"The {role} file '{path}' does not exist. Check {flag}.")
    if not path.is_file():
        raise InputFileError(f"The {role} path '{path}' is not a file. Give a file to {flag}.")
    suffix = path.suffix.lower()
    if suffix not in DRIFT_FILE_SUFFIXES:
        raise InputFileError(
            f"The {role} file '{path}' has an unsupported extension '{suffix}': give a "
            f".parquet or .csv file to {flag}."
        )
    try:
        table = pq.read_table(path) if suffix in (".parquet", ".pq") else pacsv.read_csv(path)
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(
            f"Cannot read the {role} file '{path}': {reason}. Give a valid "
            f"{'Parquet' if suffix != '.csv' else 'CSV'} file to {flag}."
        ) from exc
    if table.num_rows == 0:
        raise InputFileError(
            f"The {role} file '{path}' has no rows; drift needs data on both sides."
        )
    return table
