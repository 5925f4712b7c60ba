"""Training data: its fingerprint (sha256 over the full canonical content) and profile.

The fingerprint hashes values, not file bytes: the same table saved as CSV or Parquet,
in one chunk or many, hashes the same, while any changed, added or removed value does not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import ReleaseError
from headrace.release.manifest import (
    ColumnInfo,
    ColumnProfile,
    DataFingerprint,
    ReferenceProfile,
)

__all__ = [
    "PROFILE_BINS",
    "SAMPLE_ROWS",
    "TOP_CATEGORIES",
    "fingerprint_table",
    "profile_table",
    "read_training_data",
    "write_sample",
]

SAMPLE_ROWS = 1000
"""Rows kept in a release's reference sample."""
PROFILE_BINS = 20
"""Histogram bins per numeric column."""
TOP_CATEGORIES = 100
"""Distinct values kept per categorical column; the rest count as ``__other__``."""


def read_training_data(path: Path) -> Any:
    """Read a CSV, Parquet or JSONL file into a `pyarrow.Table`."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ReleaseError(f"Training data file '{path}' does not exist. Check the --data path.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(path)
        if suffix == ".csv":
            return pacsv.read_csv(path)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pajson.read_json(path)
    except (pa.ArrowException, OSError) as exc:
        raise ReleaseError(
            f"Cannot read training data '{path}': {exc}. "
            "Give a valid CSV, Parquet or JSONL file with --data."
        ) from exc
    raise ReleaseError(
        f"Training data '{path}' has an unsupported extension '{suffix}': "
        "use .csv, .parquet or .jsonl."
    )


def _canonical_type(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "timestamp"
    if pa.types.is_dictionary(arrow_type):
        return "category"
    return "string"


def _column_parts(column: Any, kind: str) -> tuple[bytes, ...]:
    """One chunk of one column in canonical binary form: (null mask, values[, text]).

    Each part is hashed as its own stream, so how the column is chunked cannot matter.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    nulls = np.asarray(column.is_null(), dtype=np.bool_)
    if kind == "bool":
        values = np.asarray(column.fill_null(False), dtype=np.bool_).astype(np.uint8)
    elif kind == "int":
        values = np.asarray(column.cast(pa.int64()).fill_null(0), dtype="<i8")
    elif kind == "float":
        values = np.asarray(column.cast(pa.float64()).fill_null(0.0), dtype="<f8")
    elif kind == "timestamp":
        micros = column.cast(pa.timestamp("us")).cast(pa.int64()).fill_null(0)
        values = np.asarray(micros, dtype="<i8")
    else:
        text = pc.cast(column, pa.large_string()).fill_null("")
        strings = text.to_pylist()
        lengths = np.fromiter((len(s) for s in strings), dtype="<i8", count=len(strings))
        return nulls.tobytes(), lengths.tobytes(), "".join(strings).encode("utf-8")
    return nulls.tobytes(), values.tobytes()


def fingerprint_table(table: Any, *, source: str) -> DataFingerprint:
    """Hash every value of every column, chunk by chunk, in column order."""
    columns = [
        ColumnInfo(name=field.name, type=_canonical_type(field.type)) for field in table.schema
    ]
    digest = hashlib.sha256()
    for info in columns:
        digest.update(f"{info.name}\x00{info.type}\x00".encode())
    for info, chunked in zip(columns, table.columns, strict=True):
        streams = [hashlib.sha256() for _ in range(3 if info.type in ("string", "category") else 2)]
        for chunk in chunked.chunks:
            for stream, part in zip(streams, _column_parts(chunk, info.type), strict=True):
                stream.update(part)
        for stream in streams:
            digest.update(stream.digest())
    return DataFingerprint(
        sha256=digest.hexdigest(), rows=table.num_rows, columns=columns, source=source
    )


def _numeric_profile(values: Any, count: int) -> ColumnProfile:
    import pyarrow as pa

    as_float = np.asarray(
        values.cast(pa.float64()).fill_null(np.nan)
        if values.type != pa.float64()
        else values.fill_null(np.nan),
        dtype=np.float64,
    )
    finite = as_float[np.isfinite(as_float)]
    nulls = count - int(finite.size)
    if finite.size == 0:
        return ColumnProfile(kind="numeric", count=count, nulls=nulls)
    finite = np.sort(finite)  # partitioning a sorted array is ~3x faster than a raw one
    quantiles = np.quantile(finite, np.linspace(0.0, 1.0, 101))
    counts, edges = np.histogram(finite, bins=PROFILE_BINS)
    return ColumnProfile(
        kind="numeric",
        count=count,
        nulls=nulls,
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=float(finite[0]),
        max=float(finite[-1]),
        quantiles=[float(q) for q in quantiles],
        histogram_edges=[float(e) for e in edges],
        histogram_counts=[int(c) for c in counts],
    )


def _categorical_profile(values: Any, count: int) -> ColumnProfile:
    import pyarrow as pa
    import pyarrow.compute as pc

    text = (
        pc.cast(values, pa.large_string())
        if not pa.types.is_dictionary(values.type)
        else (pc.cast(values.dictionary_decode(), pa.large_string()))
    )
    nulls = int(text.null_count)
    counted = pc.value_counts(text.drop_null()).to_pylist()
    counted.sort(key=lambda item: (-item["counts"], item["values"]))
    frequencies = {str(item["values"]): int(item["counts"]) for item in counted[:TOP_CATEGORIES]}
    other = sum(int(item["counts"]) for item in counted[TOP_CATEGORIES:])
    if other:
        frequencies["__other__"] = other
    return ColumnProfile(kind="categorical", count=count, nulls=nulls, frequencies=frequencies)


def profile_table(table: Any, *, sample: Any | None = None) -> ReferenceProfile:
    """Per-column reference distributions of a training table (no sample file yet)."""
    columns: dict[str, ColumnProfile] = {}
    for field, chunked in zip(table.schema, table.columns, strict=True):
        values = chunked.combine_chunks()
        kind = _canonical_type(field.type)
        if kind in ("float", "int", "bool", "timestamp"):
            if kind == "timestamp":
                import pyarrow as pa

                values = values.cast(pa.timestamp("us")).cast(pa.int64())
            elif kind == "bool":
                import pyarrow as pa

                values = values.cast(pa.int8())
            columns[field.name] = _numeric_profile(values, table.num_rows)
        else:
            columns[field.name] = _categorical_profile(values, table.num_rows)
    return ReferenceProfile(rows=table.num_rows, columns=columns)


def write_sample(table: Any, dest: Path, *, rows: int = SAMPLE_ROWS, seed: int = 0) -> int:
    """Write a seeded uniform sample of at most `rows` rows as Parquet; return its size."""
    import pyarrow.parquet as pq

    if table.num_rows > rows:
        picked = np.sort(np.random.default_rng(seed).choice(table.num_rows, rows, replace=False))
        table = table.take(picked)
    pq.write_table(table, dest)
    return int(table.num_rows)
