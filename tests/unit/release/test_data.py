"""Training-data fingerprint and reference profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from headrace.errors import ReleaseError
from headrace.release.data import (
    fingerprint_table,
    profile_table,
    read_training_data,
    write_sample,
)


def _table(rng: np.random.Generator, rows: int = 500) -> pa.Table:
    return pa.table(
        {
            "amount": rng.gamma(2.0, 30.0, rows),
            "count": rng.integers(0, 50, rows),
            "merchant": rng.choice(["grocery", "travel", "games"], rows),
            "flag": rng.random(rows) > 0.5,
        }
    )


def test_fingerprint_depends_on_values_not_on_file_format(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    table = _table(rng)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=37)
    pacsv.write_csv(table, tmp_path / "t.csv")
    from_parquet = fingerprint_table(read_training_data(tmp_path / "t.parquet"), source="p")
    from_csv = fingerprint_table(read_training_data(tmp_path / "t.csv"), source="c")
    in_memory = fingerprint_table(table, source="m")
    assert from_parquet.sha256 == from_csv.sha256 == in_memory.sha256
    assert from_parquet.rows == 500
    assert [(c.name, c.type) for c in from_parquet.columns] == [
        ("amount", "float"),
        ("count", "int"),
        ("merchant", "string"),
        ("flag", "bool"),
    ]


@pytest.mark.parametrize("column", ["amount", "count", "merchant", "flag"])
def test_fingerprint_changes_with_any_single_value(rng: np.random.Generator, column: str) -> None:
    table = _table(rng)
    values = table.column(column).to_pylist()
    values[-1] = {"amount": 1.5, "count": 999, "merchant": "other", "flag": not values[-1]}[column]
    changed = table.set_column(
        table.schema.get_field_index(column),
        column,
        pa.array(values, table.schema.field(column).type),
    )
    assert (
        fingerprint_table(table, source="a").sha256 != fingerprint_table(changed, source="b").sha256
    )


def test_fingerprint_tells_null_from_zero() -> None:
    with_null = pa.table({"x": pa.array([1.0, None])})
    with_zero = pa.table({"x": pa.array([1.0, 0.0])})
    assert (
        fingerprint_table(with_null, source="a").sha256
        != fingerprint_table(with_zero, source="b").sha256
    )


def test_profile_has_quantiles_histograms_and_frequencies(rng: np.random.Generator) -> None:
    profile = profile_table(_table(rng))
    amount = profile.columns["amount"]
    assert amount.kind == "numeric" and amount.quantiles is not None
    assert len(amount.quantiles) == 101 and amount.quantiles == sorted(amount.quantiles)
    assert sum(amount.histogram_counts or []) == 500
    merchant = profile.columns["merchant"]
    assert merchant.kind == "categorical"
    assert set(merchant.frequencies or {}) == {"grocery", "travel", "games"}
    assert profile.columns["flag"].kind == "numeric"


def test_sample_is_bounded_and_seeded(rng: np.random.Generator, tmp_path: Path) -> None:
    table = _table(rng, rows=5000)
    assert write_sample(table, tmp_path / "a.parquet", rows=100) == 100
    write_sample(table, tmp_path / "b.parquet", rows=100)
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))


def test_unreadable_training_data(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="does not exist"):
        read_training_data(tmp_path / "missing.csv")
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(ReleaseError, match="unsupported extension '.xlsx'"):
        read_training_data(tmp_path / "data.xlsx")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReleaseError, match="Cannot read training data"):
        read_training_data(tmp_path / "broken.parquet")
