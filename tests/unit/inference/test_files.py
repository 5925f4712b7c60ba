"""`score_file`: every row read ends up predicted or rejected, with its file row number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from headrace.errors import ConfigError, InputFileError
from headrace.inference.files import score_file
from headrace.inference.readers import iter_input_chunks
from headrace.inference.service import InferenceService
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.base import ModelOutput
from headrace.types import Matrix
from support.tables import read_rows

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float", min=0),
        Field(name="age", type="int", nullable=True),
        Field(name="merchant", type="category", values=["grocery", "travel"]),
    ]
)


class Classifier:
    flavor = "sklearn"

    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        x = rng.uniform(0, 100, size=(100, 3))
        x[:, 2] = rng.integers(0, 2, size=100)
        self.estimator = LogisticRegression().fit(x, (x[:, 0] > 50).astype(int))

    def predict(self, matrix: Matrix) -> ModelOutput:
        matrix = np.nan_to_num(np.asarray(matrix, dtype=float))
        if (matrix[:, 0] == 666).any():
            raise RuntimeError("cursed amount")
        return ModelOutput(
            self.estimator.predict(matrix),
            self.estimator.predict_proba(matrix),
            self.estimator.classes_,
        )


@pytest.fixture(scope="module")
def service() -> InferenceService:
    return InferenceService(
        Classifier(),
        schema=SCHEMA,
        inputs=SCHEMA.names,
        config=ReleaseConfig(labels=["small", "large"]),
        release="fraud:3",
        release_digest="sha256:feed",
    )


def good_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"amount": float(i % 100), "age": 20 + i % 50, "merchant": ("grocery", "travel")[i % 2]}
        for i in range(n)
    ]


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("out_ext", [".jsonl", ".csv", ".parquet"])
def test_csv_round_trip(tmp_path: Path, service: InferenceService, out_ext: str) -> None:
    lines = ["amount,age,merchant,extra"]
    lines += [f"{r['amount']},{r['age']},{r['merchant']},x" for r in good_rows(40)]
    # lines[0] is the header, so lines[k] is data row k - 1
    lines[4] = "abc,30,travel,x"  # row 3: unparsable
    lines[5] = "1,2"  # row 4: too few values
    lines[6] = "5,30,boat,x"  # row 5: not a category
    lines[7] = "666,30,travel,x"  # row 6: the model raises
    lines[8] = ",30,travel,x"  # row 7: null amount
    lines[9] = "1,2,grocery,x,y"  # row 8: too many values
    lines[10] = "7,,grocery,x"  # row 9: a null age is fine
    source = tmp_path / "in.csv"
    source.write_text("\n".join(lines) + "\n")
    out, rejects = tmp_path / f"out{out_ext}", tmp_path / f"rejects{out_ext}"
    calls: list[tuple[int, int | None]] = []
    summary = score_file(
        service,
        input_path=source,
        output_path=out,
        rejects_path=rejects,
        progress=lambda done, total: calls.append((done, total)),
        chunk_rows=16,
    )
    assert summary.rows == 40
    assert summary.predicted == 34 and summary.rejected == 6
    assert summary.predicted + summary.rejected == summary.rows
    assert summary.rejected_by_stage == {"decode": 2, "validate": 3, "predict": 1}
    predictions = read_rows(out)
    assert [p["row"] for p in predictions] == [i for i in range(40) if i not in {3, 4, 5, 6, 7, 8}]
    assert list(predictions[0]) == [
        "row",
        "prediction",
        "score",
        "proba_small",
        "proba_large",
        "release",
        "release_digest",
    ]
    assert {p["prediction"] for p in predictions} <= {"small", "large"}
    assert all(0 <= p["score"] <= 1 for p in predictions)
    assert {(p["release"], p["release_digest"]) for p in predictions} == {
        ("fraud:3", "sha256:feed")
    }
    rejected = read_rows(rejects)
    assert [(r["row"], r["stage"], r["field"]) for r in rejected] == [
        (3, "validate", "amount"),
        (4, "decode", None),
        (5, "validate", "merchant"),
        (6, "predict", None),
        (7, "validate", "amount"),
        (8, "decode", None),
    ]
    assert rejected[1]["reason"] == "Expected 4 columns, got 2"
    assert rejected[3]["reason"] == "Model raised RuntimeError: cursed amount"
    assert calls[-1] == (40, 40) and len(calls) >= 3
    assert all(total is None or total >= done for done, total in calls)
    assert not list(tmp_path.glob("*.partial"))


def test_parquet_round_trip(tmp_path: Path, service: InferenceService) -> None:
    rows = good_rows(30)
    amount: list[Any] = [r["amount"] for r in rows]
    age: list[Any] = [r["age"] for r in rows]
    amount[2], amount[4], age[6] = None, -1.0, None
    table = pa.table(
        {
            "amount": pa.array(amount, pa.float64()),
            "age": pa.array(age, pa.int64()),
            "merchant": pa.array([r["merchant"] for r in rows]).dictionary_encode(),
            "ignored": pa.array([[1]] * 30),
        }
    )
    source = tmp_path / "in.parquet"
    pq.write_table(table, source, row_group_size=7)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.csv"
    totals: list[int | None] = []
    summary = score_file(
        service,
        input_path=source,
        output_path=out,
        rejects_path=rejects,
        progress=lambda done, total: totals.append(total),
        chunk_rows=8,
    )
    assert (summary.rows, summary.predicted, summary.rejected) == (30, 28, 2)
    assert set(totals) == {30}
    rejected = read_rows(rejects)
    assert [(r["row"], r["reason"]) for r in rejected] == [
        (2, "Expected `float`, got `null` - at `$.amount`"),
        (4, "Value -1.0 below minimum 0.0 - at `$.amount`"),
    ]
    predictions = read_rows(out)
    assert 6 in [p["row"] for p in predictions]  # a null int in a nullable field


def test_jsonl_round_trip(tmp_path: Path, service: InferenceService) -> None:
    lines = [json.dumps(r) for r in good_rows(10)]
    lines[1] = "{not json"
    lines[2] = "[1, 2]"
    lines[3] = ""  # blank: skipped, not a row
    lines[4] = json.dumps({"amount": "12", "age": 3, "merchant": "travel"})
    lines[5] = json.dumps({"age": 3, "merchant": "travel"})
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n\n")
    out, rejects = tmp_path / "out.parquet", tmp_path / "rejects.jsonl"
    summary = score_file(service, input_path=source, output_path=out, rejects_path=rejects)
    assert (summary.rows, summary.predicted, summary.rejected) == (9, 5, 4)
    assert [p["row"] for p in read_rows(out)] == [0, 6, 7, 8, 9]
    rejected = read_rows(rejects)
    assert [(r["row"], r["stage"]) for r in rejected] == [
        (1, "decode"),
        (2, "decode"),
        (4, "validate"),
        (5, "validate"),
    ]
    assert rejected[0]["reason"].startswith("Invalid JSON: ")
    assert rejected[1]["reason"] == "Expected `object`, got `array` - at `$`"
    assert rejected[3]["reason"] == "Missing required field `amount`"
    assert summary.first_rejections[0].row == 1


def test_json_array_file(tmp_path: Path, service: InferenceService) -> None:
    source = tmp_path / "in.json"
    source.write_text(json.dumps([*good_rows(3), "oops"]))
    summary = score_file(service, input_path=source, output_path=tmp_path / "o.jsonl")
    assert (summary.rows, summary.predicted, summary.rejected) == (4, 3, 1)
    assert summary.rejects_path is None and summary.first_rejections[0].row == 3
    broken = tmp_path / "broken.json"
    broken.write_text('[{"a": 1},\n {"a": }]')
    with pytest.raises(InputFileError, match=r"Invalid JSON in '.*broken\.json' at line 2"):
        list(iter_input_chunks(broken))


def test_missing_required_column_is_a_file_error(tmp_path: Path, service: InferenceService) -> None:
    source = tmp_path / "in.csv"
    source.write_text("amount,merchant\n1,travel\n")
    with pytest.raises(InputFileError, match=r"has no column 'age', required by the schema"):
        score_file(service, input_path=source, output_path=tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists() and not list(tmp_path.glob("*.partial"))


def test_output_path_errors(tmp_path: Path, service: InferenceService) -> None:
    source = tmp_path / "in.csv"
    source.write_text("amount,age,merchant\n1,2,travel\n")
    with pytest.raises(ConfigError, match=r"Cannot write predictions to '.*out\.txt': unknown"):
        score_file(service, input_path=source, output_path=tmp_path / "out.txt")
    with pytest.raises(ConfigError, match="is the input file"):
        score_file(service, input_path=source, output_path=source)
    with pytest.raises(ConfigError, match="both go to"):
        score_file(
            service,
            input_path=source,
            output_path=tmp_path / "o.csv",
            rejects_path=tmp_path / "o.csv",
        )


def test_header_only_and_all_rejected(tmp_path: Path, service: InferenceService) -> None:
    source = tmp_path / "in.csv"
    source.write_text("amount,age,merchant\n")
    out = tmp_path / "out.parquet"
    summary = score_file(
        service, input_path=source, output_path=out, rejects_path=tmp_path / "r.csv"
    )
    assert summary.rows == 0
    assert pq.read_table(out).column_names == ["row", "prediction", "release", "release_digest"]
    assert not (tmp_path / "r.csv").exists()  # nothing rejected: no rejects file
    assert summary.rejects_path is None
    bad = tmp_path / "bad.csv"
    bad.write_text("amount,age,merchant\nx,1,travel\n")
    summary = score_file(service, input_path=bad, output_path=tmp_path / "o.jsonl")
    assert (summary.predicted, summary.rejected) == (0, 1)
    assert (tmp_path / "o.jsonl").read_text() == ""


# -- kept columns, per-class probabilities, no empty rejects ------------------------------


def _write_input(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix == ".csv":
        names = list(rows[0])
        lines = [",".join(names)] + [",".join(str(r[n]) for n in names) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("in_ext", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("out_ext", [".jsonl", ".csv", ".parquet"])
def test_kept_columns_and_class_probabilities(
    tmp_path: Path, service: InferenceService, in_ext: str, out_ext: str
) -> None:
    rows = [{"id": f"e{i}", "region": "north", **r} for i, r in enumerate(good_rows(30))]
    rows[4]["amount"] = -1.0  # below min: rejected, its id not in the output
    source = tmp_path / f"in{in_ext}"
    _write_input(source, rows)
    out, rejects = tmp_path / f"out{out_ext}", tmp_path / "rejects.jsonl"
    summary = score_file(
        service,
        input_path=source,
        output_path=out,
        rejects_path=rejects,
        keep=["id", "region", "amount"],
        chunk_rows=8,
    )
    assert (summary.predicted, summary.rejected) == (29, 1)
    predictions = read_rows(out)
    assert list(predictions[0]) == [
        "row", "id", "region", "amount", "prediction", "score",
        "proba_small", "proba_large", "release", "release_digest",
    ]  # fmt: skip
    assert [p["id"] for p in predictions] == [f"e{i}" for i in range(30) if i != 4]
    assert all(str(p["id"]) == f"e{p['row']}" and p["region"] == "north" for p in predictions)
    for p in predictions:
        assert p["proba_small"] + p["proba_large"] == pytest.approx(1.0)
        assert p["score"] == pytest.approx(p["proba_large"])  # binary: P(positive class)
    assert rejects.exists()


def test_no_rejects_file_when_nothing_was_rejected(
    tmp_path: Path, service: InferenceService
) -> None:
    source = tmp_path / "in.jsonl"
    _write_input(source, good_rows(5))
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text('{"row": 1, "reason": "from an earlier run"}\n')
    summary = score_file(
        service, input_path=source, output_path=tmp_path / "o.csv", rejects_path=rejects
    )
    assert summary.rejected == 0 and summary.rejects_path is None
    assert not rejects.exists()  # a stale file would read as this run's rejects


def test_kept_columns_must_exist_and_not_clash(tmp_path: Path, service: InferenceService) -> None:
    rows = [{"id": i, **r} for i, r in enumerate(good_rows(3))]
    for ext in (".csv", ".jsonl", ".parquet"):
        source = tmp_path / f"in{ext}"
        _write_input(source, rows)
        with pytest.raises(InputFileError, match=r"has no column 'ID' to keep"):
            score_file(service, input_path=source, output_path=tmp_path / "o.csv", keep=["ID"])
    for bad in ("score", "proba_x", "row"):
        with pytest.raises(ConfigError, match=f"--keep column '{bad}' has the name"):
            score_file(service, input_path=source, output_path=tmp_path / "o.csv", keep=[bad])
    with pytest.raises(ConfigError, match="twice"):
        score_file(service, input_path=source, output_path=tmp_path / "o.csv", keep=["id", "id"])
