"""Issue 9, silent wrong predictions: the model's own signature decides the column order.

Every flavor is registered with its ``--data`` columns reversed and a schema in another
order (alphabetical), then ``headrace predict`` scores the training rows from a file in
the training order and from one with the columns shuffled: every prediction must equal the
model's own (on main before the fix a wine forest agreed on 38% of rows, exit 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml

from headrace.cli.main import main

Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``headrace ...`` in this process, with its own home: (exit code, stdout + stderr)."""
    for key in list(os.environ):
        if key.startswith("HEADRACE_") and key != "HEADRACE_REQUIRE_SERVICES":
            monkeypatch.delenv(key)
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEADRACE_ACTOR", "contract@test")

    def invoke(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return invoke


@dataclass(frozen=True)
class Case:
    """A fitted model saved for one flavor, its training frame and its own predictions."""

    path: Path
    frame: pd.DataFrame
    expected: np.ndarray
    regression: bool = False


def _dataset(name: str) -> tuple[pd.DataFrame, pd.Series]:
    from sklearn import datasets

    loader = {
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
    }[name]
    x, y = loader(return_X_y=True, as_frame=True)
    # Plain identifiers: ONNX converters rewrite '/' and spaces in input names.
    x = x.rename(columns=lambda c: c.replace("/", "_").replace(" ", "_"))
    return x, y


def _sklearn(tmp: Path, dataset: str) -> Case:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    x, y = _dataset(dataset)
    regression = dataset == "diabetes"
    kind = RandomForestRegressor if regression else RandomForestClassifier
    model = kind(n_estimators=30, random_state=0).fit(x, y)
    joblib.dump(model, tmp / "model.joblib")
    return Case(tmp / "model.joblib", x, model.predict(x), regression)


def _lightgbm(tmp: Path, dataset: str) -> Case:
    import lightgbm as lgb

    x, y = _dataset(dataset)
    regression = dataset == "diabetes"
    kind = lgb.LGBMRegressor if regression else lgb.LGBMClassifier
    model = kind(n_estimators=30, verbose=-1, random_state=0).fit(x, y)
    model.booster_.save_model(str(tmp / "model.txt"))
    return Case(tmp / "model.txt", x, model.predict(x), regression)


def _xgboost(tmp: Path, dataset: str) -> Case:
    import xgboost as xgb

    x, y = _dataset(dataset)
    regression = dataset == "diabetes"
    kind = xgb.XGBRegressor if regression else xgb.XGBClassifier
    model = kind(n_estimators=30, max_depth=3, random_state=0).fit(x, y)
    model.save_model(str(tmp / "model.json"))
    return Case(tmp / "model.json", x, model.predict(x), regression)


def _onnx(tmp: Path, dataset: str) -> Case:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.pipeline import Pipeline

    x, y = _dataset(dataset)
    x = x.astype(np.float32)
    regression = dataset == "diabetes"
    kind = RandomForestRegressor if regression else RandomForestClassifier
    estimator = kind(n_estimators=20, max_depth=6, random_state=0)
    columns = list(x.columns)
    model = Pipeline(
        [("select", ColumnTransformer([("num", "passthrough", columns)])), ("model", estimator)]
    ).fit(x, y)
    options = {} if regression else {id(estimator): {"zipmap": False}}
    graph = to_onnx(
        model, initial_types=[(c, FloatTensorType([None, 1])) for c in columns], options=options
    )
    (tmp / "model.onnx").write_bytes(graph.SerializeToString())
    return Case(tmp / "model.onnx", x, model.predict(x), regression)


BUILDERS: dict[str, Callable[[Path, str], Case]] = {
    "sklearn": _sklearn,
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
    "onnx": _onnx,
}
CASES = [
    ("sklearn", "wine"),
    ("sklearn", "diabetes"),
    ("lightgbm", "wine"),
    ("lightgbm", "breast_cancer"),
    ("xgboost", "breast_cancer"),
    ("xgboost", "diabetes"),
    ("onnx", "wine"),
    ("onnx", "diabetes"),
]


def _agreement(output: Path, case: Case) -> float:
    got = pd.read_csv(output)["prediction"].to_numpy()
    assert len(got) == len(case.expected)
    if case.regression:
        return float(np.mean(np.isclose(got, case.expected, rtol=1e-5, atol=1e-5)))
    return float(np.mean(got.astype(np.int64) == np.asarray(case.expected).astype(np.int64)))


def _inputs(tmp: Path, frame: pd.DataFrame) -> Iterator[Path]:
    ordered = tmp / "ordered.csv"
    frame.to_csv(ordered, index=False)
    yield ordered
    rng = np.random.default_rng(11)
    shuffled = tmp / "shuffled.csv"
    frame[list(rng.permutation(frame.columns))].to_csv(shuffled, index=False)
    yield shuffled
    as_json = tmp / "shuffled.jsonl"
    # json.dumps writes the shortest exact repr (pandas' to_json rounds to 10 digits).
    records = frame[list(rng.permutation(frame.columns))].to_dict(orient="records")
    as_json.write_text("".join(json.dumps(r) + "\n" for r in records))
    yield as_json


@pytest.mark.parametrize(("flavor", "dataset"), CASES)
def test_predictions_follow_the_model_signature_not_the_column_order(
    cli: Cli, tmp_path: Path, flavor: str, dataset: str
) -> None:
    case = BUILDERS[flavor](tmp_path, dataset)
    reversed_data = tmp_path / "train.parquet"
    case.frame[case.frame.columns[::-1]].to_parquet(reversed_data)
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        yaml.safe_dump({"fields": [{"name": c, "type": "float"} for c in sorted(case.frame)]})
    )
    for label, options in (
        ("reversed-data", ["--data", str(reversed_data)]),
        ("sorted-schema", ["--data", str(reversed_data), "--schema", str(schema)]),
    ):
        code, out = cli("register", str(case.path), "--name", label, "--flavor", flavor, *options)
        assert code == 0, out
        for source in _inputs(tmp_path, case.frame):
            output = tmp_path / f"{label}-{source.stem}.csv"
            code, out = cli(
                "predict", f"{label}:1", "--input", str(source), "--output", str(output)
            )
            assert code == 0, out
            assert _agreement(output, case) == 1.0, (label, source.name)


def test_show_records_the_signature(cli: Cli, tmp_path: Path) -> None:
    case = _sklearn(tmp_path, "wine")
    data = tmp_path / "train.parquet"
    case.frame[case.frame.columns[::-1]].to_parquet(data)
    assert cli("register", str(case.path), "--name", "wine", "--data", str(data))[0] == 0
    code, out = cli("releases", "show", "wine:1", "--json")
    assert code == 0, out
    signature = json.loads(out[out.index("{") :])["manifest"]["signature"]
    assert [i["name"] for i in signature["inputs"]] == list(case.frame.columns)
    assert signature["named"] is True
    assert signature["classes"] == [0, 1, 2]
    code, out = cli("releases", "show", "wine:1")
    assert code == 0, out
    line = next(li for li in out.splitlines() if li.startswith("signature"))
    assert line.endswith(", ".join(case.frame.columns)), line
    assert "feature_names_in_" in line


def _registered(cli: Cli) -> set[str]:
    """The release refs in the registry (none when no registry was ever created)."""
    code, out = cli("releases", "list", "--json")
    if code != 0:
        assert "No registry at" in out, out
        return set()
    return {f"{row['name']}:{row['version']}" for row in json.loads(out)}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("missing", "takes columns 'proline'"),
        ("extra", "not fitted on"),
        ("string", "types the model cannot take"),
    ],
)
def test_schema_that_does_not_match_the_signature_is_refused(
    cli: Cli, tmp_path: Path, change: str, words: str
) -> None:
    case = _lightgbm(tmp_path, "wine")
    data = case.frame.copy()
    fields: list[dict[str, Any]] = [{"name": c, "type": "float"} for c in data.columns]
    if change == "missing":
        fields = [f for f in fields if f["name"] != "proline"]
    elif change == "extra":
        fields.append({"name": "colour", "type": "float"})
        data["colour"] = 1.0
    else:
        fields[0]["type"] = "string"
        data[fields[0]["name"]] = data[fields[0]["name"]].astype(str)
    data.to_parquet(tmp_path / "train.parquet")
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump({"fields": fields}))
    code, out = cli(
        "register",
        str(case.path),
        "--name",
        "wine",
        "--schema",
        str(tmp_path / "schema.yaml"),
        "--data",
        str(tmp_path / "train.parquet"),
    )
    assert code == 1
    assert words in out
    assert "Release 'wine'" in out or "release 'wine'" in out
    assert _registered(cli) == set()


def _torch_program(tmp: Path) -> Case:
    """A seeded network on diabetes, saved as a torch.export program (10 inputs, no names)."""
    import torch

    x, _ = _dataset("diabetes")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    net.eval()
    example = torch.zeros(4, 10)
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp / "model.pt2"))
    with torch.inference_mode():
        expected = net(torch.from_numpy(x.to_numpy(dtype=np.float32))).numpy().reshape(-1)
    return Case(tmp / "model.pt2", x, expected, regression=True)


def test_torch_program_width_is_checked_and_order_needs_no_guess(cli: Cli, tmp_path: Path) -> None:
    case = _torch_program(tmp_path)
    data = tmp_path / "train.parquet"
    case.frame.to_parquet(data)
    code, out = cli("register", str(case.path), "--name", "net", "--data", str(data))
    assert code == 0, out
    for source in _inputs(tmp_path, case.frame):
        output = tmp_path / f"net-{source.stem}.csv"
        assert cli("predict", "net:1", "--input", str(source), "--output", str(output))[0] == 0
        assert _agreement(output, case) == 1.0, source.name

    with_label = tmp_path / "with_label.parquet"
    case.frame.assign(target=1.0).to_parquet(with_label)
    code, out = cli("register", str(case.path), "--name", "net2", "--data", str(with_label))
    assert code == 1
    assert "takes 10 input columns (torch.export input shape) but the release gives it 11" in out

    schema = tmp_path / "schema.yaml"
    schema.write_text(
        yaml.safe_dump({"fields": [{"name": c, "type": "float"} for c in sorted(case.frame)]})
    )
    code, out = cli(
        "register", str(case.path), "--name", "net3", "--data", str(data), "--schema", str(schema)
    )
    assert code == 1
    assert "fitted without column names" in out
    features = tmp_path / "features.yaml"
    features.write_text(yaml.safe_dump({"inputs": list(case.frame.columns)}))
    code, out = cli(
        "register",
        str(case.path),
        "--name",
        "net3",
        "--data",
        str(data),
        "--schema",
        str(schema),
        "--features",
        str(features),
    )
    assert code == 0, out
    output = tmp_path / "net3.csv"
    assert (
        cli(
            "predict", "net3:1", "--input", str(tmp_path / "shuffled.csv"), "--output", str(output)
        )[0]
        == 0
    )
    assert _agreement(output, case) == 1.0
    assert {r.split(":")[0] for r in _registered(cli)} == {"net", "net3"}


def test_schema_field_absent_from_data_is_refused_and_registry_unchanged(
    cli: Cli, tmp_path: Path
) -> None:
    case = _sklearn(tmp_path, "wine")
    data = tmp_path / "train.parquet"
    case.frame.to_parquet(data)
    fields = [{"name": c, "type": "float"} for c in case.frame.columns]
    fields.append({"name": "vintage", "type": "int"})
    schema = tmp_path / "schema.yaml"
    schema.write_text(yaml.safe_dump({"fields": fields}))
    code, out = cli(
        "register", str(case.path), "--name", "wine", "--data", str(data), "--schema", str(schema)
    )
    assert code == 1
    assert "'vintage'" in out and "not columns of the training data" in out
    assert _registered(cli) == set()


def test_a_model_failing_on_its_own_sample_or_count_is_refused(cli: Cli, tmp_path: Path) -> None:
    """Issue 9, register refuses what cannot work: the registry stays empty."""
    from sklearn.ensemble import RandomForestClassifier

    x, y = _dataset("wine")
    failing = tmp_path / "failing.py"
    failing.write_text("def predict(matrix):\n    raise ValueError('cannot score this')\n")
    data = tmp_path / "train.parquet"
    x.to_parquet(data)
    code, out = cli("register", f"{failing}:predict", "--name", "failing", "--data", str(data))
    assert code == 1
    assert "raised on 178 of 178 rows" in out and "cannot score this" in out

    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(x.to_numpy(), y)
    joblib.dump(model, tmp_path / "array.joblib")
    x.assign(batch=1.0).to_parquet(data)
    code, out = cli(
        "register", str(tmp_path / "array.joblib"), "--name", "count", "--data", str(data)
    )
    assert code == 1
    assert "takes 13 input columns (sklearn n_features_in_) but the release gives it 14" in out
    assert _registered(cli) == set()
