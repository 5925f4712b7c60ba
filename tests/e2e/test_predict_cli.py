"""`headrace predict` end to end: exit codes, kept columns, per-class probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support.cli import Run, make_runner, register
from support.models import ModelFiles, write_sklearn_release
from support.tables import read_rows


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, ModelFiles, Path]:
    root = tmp_path_factory.mktemp("predict")
    files = write_sklearn_release(root / "model")
    runner = make_runner(root / "home", root)
    register(runner, files, "--alias", "champion")
    return runner, files, root


def _rows(files: ModelFiles, n: int) -> list[dict[str, object]]:
    return [
        {"txn": f"t{i}", **{f"f{j}": float(files.features[i, j]) for j in range(5)}}
        for i in range(n)
    ]


def test_nothing_scored_exits_3_and_too_many_rejected_exits_4(
    champion: tuple[Run, ModelFiles, Path],
) -> None:
    run, files, root = champion
    rows = _rows(files, 10)
    for r in rows[:3]:
        r["f0"] = "not a number"
    source = root / "some-bad.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run("predict", "fraud", "--input", str(source)).returncode == 0
    within = run("predict", "fraud", "--input", str(source), "--max-reject-ratio", "0.3")
    assert within.returncode == 0, within.stderr
    over = run("predict", "fraud", "--input", str(source), "--max-reject-ratio", "0.2", ok=False)
    assert over.returncode == 4
    assert "3 of 10 rows rejected (30.0%), more than --max-reject-ratio 0.2" in over.stderr
    assert len(read_rows(root / "some-bad.predictions.jsonl")) == 7  # written all the same

    for r in rows:
        r["f0"] = "not a number"
    bad = root / "all-bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    nothing = run("predict", "fraud", "--input", str(bad), "--json", ok=False)
    assert nothing.returncode == 3
    assert json.loads(nothing.stdout)["exit_code"] == 3
    assert "no row could be scored: all 10 rows were rejected" in nothing.stderr
    header_only = root / "header.csv"
    header_only.write_text("txn,f0,f1,f2,f3,f4\n")
    empty = run("predict", "fraud", "--input", str(header_only), ok=False)
    assert empty.returncode == 3 and "the input has no data rows" in empty.stderr
    usage = run("predict", "fraud", "--input", str(bad), "--max-reject-ratio", "1.5", ok=False)
    assert usage.returncode == 2


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_keep_carries_ids_and_no_empty_rejects_file(
    champion: tuple[Run, ModelFiles, Path], ext: str
) -> None:
    run, files, root = champion
    rows = _rows(files, 12)
    source = root / f"clean{ext}"
    if ext == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), source)
    elif ext == ".csv":
        names = list(rows[0])
        source.write_text(
            "\n".join([",".join(names), *(",".join(str(r[n]) for n in names) for r in rows)])
        )
    else:
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run("predict", "fraud", "--input", str(source), "--keep", "txn", "--json")
    summary = json.loads(result.stdout)
    assert summary["rejects"] is None and summary["exit_code"] == 0
    assert not list(root.glob("clean.predictions.rejects*"))
    out = read_rows(Path(summary["output"]))
    assert [r["txn"] for r in out] == [f"t{i}" for i in range(12)]
    assert list(out[0])[:6] == ["row", "txn", "prediction", "score", "proba_legit", "proba_fraud"]
    for r in out:
        assert r["score"] == pytest.approx(r["proba_fraud"])  # score is P(positive class)


def test_help_names_exit_codes_and_score_meaning(champion: tuple[Run, ModelFiles, Path]) -> None:
    run, _, _ = champion
    text = " ".join(run("predict", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "P(positive class)" in text and "3 no row scored" in text
    assert "{ref}" not in text and "Usage: headrace predict [OPTIONS] REF" in text
