"""The model contract: the model's signature decides the columns; verify compares with
the model called as it was fitted; DataFrame models get a DataFrame, array models numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.errors import ReleaseError, SchemaError
from headrace.inference.contract import (
    check_draft,
    compare_outputs,
    resolve_signature,
    verify_with_reference,
)
from headrace.inference.service import InferenceService
from headrace.release.bundle import build_draft
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.base import ModelOutput, NativeSignature
from headrace.runtimes.loader import load_model
from headrace.types import Matrix

COLUMNS = ["alpha", "beta", "gamma", "delta", "epsilon"]


@pytest.fixture(scope="module")
def frame_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, Any]:
    """A forest fitted on a named DataFrame, saved with joblib."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(5)
    x = pd.DataFrame(rng.normal(size=(200, len(COLUMNS))) * [1, 10, 100, 0.1, 5], columns=COLUMNS)
    y = (x["alpha"] + x["beta"] / 10 - x["gamma"] / 100 > 0).astype(int)
    model = RandomForestClassifier(n_estimators=15, random_state=0).fit(x, y)
    directory = tmp_path_factory.mktemp("frame-model")
    joblib.dump(model, directory / "model.joblib")
    return directory, x, model


def _service(model: Any, schema: Schema, signature: Any) -> InferenceService:
    return InferenceService(
        model,
        schema=schema,
        inputs=schema.names,
        config=ReleaseConfig(),
        release="t:1",
        release_digest="d",
        signature=signature,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schema_order=st.permutations(COLUMNS),
    batch_order=st.permutations(COLUMNS),
    rows=st.integers(min_value=1, max_value=40),
)
def test_any_schema_or_batch_order_gives_the_models_own_predictions(
    frame_model: tuple[Path, pd.DataFrame, Any],
    schema_order: list[str],
    batch_order: list[str],
    rows: int,
) -> None:
    directory, x, fitted = frame_model
    model = load_model("sklearn", model_dir=directory, entry="model.joblib")
    schema = Schema(fields=[Field(name=n, type="float") for n in schema_order])
    signature = resolve_signature(
        model.signature(),  # type: ignore[attr-defined]
        schema=schema,
        inputs=schema.names,
        release="t",
    )
    assert signature.names == COLUMNS
    batch = x.iloc[:rows]
    columns = {name: batch[name].to_numpy() for name in batch_order}
    result = _service(model, schema, signature).infer(columns, n_rows=rows)
    assert list(result.predictions) == list(fitted.predict(batch))


def test_without_a_signature_the_schema_order_is_used_as_before(
    frame_model: tuple[Path, pd.DataFrame, Any],
) -> None:
    """Old releases keep working as today: no signature, inputs in the given order."""
    directory, x, _ = frame_model
    model = load_model("sklearn", model_dir=directory, entry="model.joblib")
    schema = Schema(fields=[Field(name=n, type="float") for n in COLUMNS])
    service = _service(model, schema, None)
    assert service.inputs == COLUMNS
    assert isinstance(service.model_input({n: x[n].to_numpy() for n in COLUMNS}), np.ndarray)


@pytest.mark.parametrize(
    ("native", "inputs", "words"),
    [
        (NativeSignature(n_features=4, source="s"), COLUMNS, "takes 4 input columns"),
        (NativeSignature(names=("alpha", "zeta")), ["alpha"], "takes columns 'zeta'"),
        (NativeSignature(names=("alpha",)), ["alpha", "beta"], "'beta' that it was not fitted"),
        (NativeSignature(numeric_only=True), ["alpha", "note"], r"'note' \(string\)"),
        (
            NativeSignature(names=("alpha", "note"), dtypes=("tensor(float)", "tensor(float)")),
            ["alpha", "note"],
            r"'note' \(string\)",
        ),
    ],
)
def test_a_release_that_does_not_fit_the_signature_is_refused(
    native: NativeSignature, inputs: list[str], words: str
) -> None:
    fields = [Field(name=n, type="float") for n in COLUMNS]
    fields.append(Field(name="note", type="string"))
    with pytest.raises(ReleaseError, match=words):
        resolve_signature(native, schema=Schema(fields=fields), inputs=inputs, release="t")


def test_categories_may_feed_a_numeric_model_and_strings_a_string_input() -> None:
    schema = Schema(
        fields=[
            Field(name="kind", type="category", values=["a", "b"]),
            Field(name="text", type="string"),
        ]
    )
    native = NativeSignature(names=("text", "kind"), dtypes=("tensor(string)", "tensor(float)"))
    signature = resolve_signature(native, schema=schema, inputs=schema.names, release="t")
    assert signature.names == ["text", "kind"]
    assert [i.dtype for i in signature.inputs] == ["tensor(string)", "tensor(float)"]


def test_compare_outputs_names_the_first_differing_row() -> None:
    same = ModelOutput(predictions=np.array([1, 2, 3]))
    assert compare_outputs(same, ModelOutput(predictions=np.array([1, 2, 3]))) is None
    message = compare_outputs(same, ModelOutput(predictions=np.array([1, 5, 3])))
    assert message is not None and "1 of 3 rows differ in prediction, e.g. row 1" in message
    proba = ModelOutput(predictions=np.array([0]), probabilities=np.array([[0.4, 0.6]]))
    other = ModelOutput(predictions=np.array([0]), probabilities=np.array([[0.6, 0.4]]))
    message = compare_outputs(proba, other)
    assert message is not None and "probabilities" in message


class _TwoFacedModel:
    """Answers one thing through the runtime and another when called as fitted."""

    flavor = "python"

    def predict(self, matrix: Matrix) -> ModelOutput:
        return ModelOutput(predictions=np.zeros(len(matrix)))

    def reference_predict(self, frame: Any) -> ModelOutput:
        return ModelOutput(predictions=np.ones(len(frame)))

    def signature(self) -> NativeSignature:
        return NativeSignature(names=("alpha",))


def _draft(tmp_path: Path, model_dir: Path, data: pd.DataFrame, **kwargs: Any) -> Any:
    data_path = tmp_path / "train.parquet"
    data.to_parquet(data_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return build_draft(
        model_dir / "model.joblib",
        name="t",
        flavor="sklearn",
        workdir=scratch,
        data_path=data_path,
        code_version="test",
        **kwargs,
    )


def test_a_runtime_that_disagrees_with_the_fitted_call_is_refused(
    tmp_path: Path, frame_model: tuple[Path, pd.DataFrame, Any]
) -> None:
    directory, x, _ = frame_model
    draft = _draft(tmp_path, directory, x[["alpha"]])
    schema = Schema(fields=[Field(name="alpha", type="float")])
    model = _TwoFacedModel()
    signature = resolve_signature(model.signature(), schema=schema, inputs=["alpha"], release="t")
    import dataclasses

    signed = dataclasses.replace(draft, schema=schema, signature=signature)
    with pytest.raises(ReleaseError, match="answers differently through headrace"):
        verify_with_reference(signed, model)


def test_check_draft_records_the_models_order_and_drops_data_only_columns(
    tmp_path: Path, frame_model: tuple[Path, pd.DataFrame, Any]
) -> None:
    directory, x, _ = frame_model
    data = x[COLUMNS[::-1]].assign(label=1)
    signed, rows = check_draft(_draft(tmp_path, directory, data), schema_given=False)
    assert signed.signature is not None and signed.signature.names == COLUMNS
    assert signed.signature.named and not signed.signature.frame
    assert signed.schema.names == COLUMNS[::-1]  # the label is data only
    assert rows == len(x)


def test_an_array_model_with_schema_and_data_in_different_orders_is_refused(
    tmp_path: Path,
) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    joblib.dump(LogisticRegression().fit(x, x[:, 0] > 0), model_dir / "model.joblib")
    data = pd.DataFrame(x, columns=["a", "b", "c"])
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "fields:\n- {name: c, type: float}\n- {name: b, type: float}\n- {name: a, type: float}\n"
    )
    draft = _draft(tmp_path, model_dir, data, schema_path=schema)
    with pytest.raises(ReleaseError, match="fitted without column names"):
        check_draft(draft, schema_given=True)


def test_a_schema_field_absent_from_the_data_is_refused(
    tmp_path: Path, frame_model: tuple[Path, pd.DataFrame, Any]
) -> None:
    directory, x, _ = frame_model
    schema = tmp_path / "schema.yaml"
    schema.write_text("fields:\n- {name: alpha, type: float}\n- {name: omega, type: float}\n")
    with pytest.raises(SchemaError, match="'omega' of .* are not columns of the training data"):
        _draft(tmp_path, directory, x, schema_path=schema)


# -- DataFrame models ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, Any]:
    """A Pipeline whose ColumnTransformer selects by name, strings through OneHotEncoder."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(3)
    n = 300
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, n),
            "merchant": rng.choice(["grocery", "travel", "online", "fuel"], n),
            "hour": rng.integers(0, 24, n),
            "country": rng.choice(["DE", "FR", "US"], n),
        }
    )
    y = ((frame["amount"] > 100) & frame["merchant"].isin(["travel", "online"])).astype(int)
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["amount", "hour"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant", "country"]),
        ]
    )
    model = Pipeline([("prep", prep), ("clf", LogisticRegression())]).fit(frame, y)
    directory = tmp_path_factory.mktemp("pipeline-model")
    joblib.dump(model, directory / "model.joblib")
    return directory, frame, model


def test_a_dataframe_pipeline_registers_and_predicts_by_name(
    tmp_path: Path, pipeline_model: tuple[Path, pd.DataFrame, Any]
) -> None:
    directory, frame, fitted = pipeline_model
    shuffled = frame[["country", "hour", "merchant", "amount"]]
    signed, rows = check_draft(_draft(tmp_path, directory, shuffled), schema_given=False)
    assert rows == len(frame)
    signature = signed.signature
    assert signature is not None and signature.frame
    assert signature.names == ["amount", "merchant", "hour", "country"]
    assert [i.type for i in signature.inputs] == ["float", "string", "int", "string"]
    model = load_model("sklearn", model_dir=directory, entry="model.joblib")
    service = _service(model, signed.schema, signature)
    records = shuffled.to_dict(orient="records")
    result = service.infer_records(records)
    assert result.n_predicted == len(frame)
    assert list(result.predictions) == list(fitted.predict(frame))
    handed = service.model_input({c: shuffled[c].to_numpy() for c in shuffled})
    assert isinstance(handed, pd.DataFrame)
    assert list(handed.columns) == signature.names
    assert handed["merchant"].iloc[0] == frame["merchant"].iloc[0]


def test_array_models_and_numeric_signatures_keep_the_numpy_path(
    tmp_path: Path, frame_model: tuple[Path, pd.DataFrame, Any]
) -> None:
    directory, x, _ = frame_model
    signed, _ = check_draft(_draft(tmp_path, directory, x), schema_given=False)
    assert signed.signature is not None and not signed.signature.frame
    model = load_model("sklearn", model_dir=directory, entry="model.joblib")
    service = _service(model, signed.schema, signed.signature)
    handed = service.model_input({c: x[c].to_numpy() for c in COLUMNS})
    assert isinstance(handed, np.ndarray) and handed.dtype == np.float64


def test_a_numeric_model_selecting_columns_by_name_gets_a_dataframe(
    tmp_path: Path, frame_model: tuple[Path, pd.DataFrame, Any]
) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    _, x, _ = frame_model
    y = (x["alpha"] > 0).astype(int)
    select = ColumnTransformer([("keep", "passthrough", ["gamma", "alpha"])])
    fitted = Pipeline([("select", select), ("clf", LogisticRegression())]).fit(x, y)
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    joblib.dump(fitted, model_dir / "model.joblib")
    signed, rows = check_draft(_draft(tmp_path, model_dir, x), schema_given=False)
    assert rows == len(x)
    assert signed.signature is not None and signed.signature.frame
    model = load_model("sklearn", model_dir=model_dir, entry="model.joblib")
    result = _service(model, signed.schema, signed.signature).infer(
        {c: x[c].to_numpy() for c in COLUMNS}, n_rows=len(x)
    )
    assert list(result.predictions) == list(fitted.predict(x))


def test_categories_and_timestamps_reach_a_numeric_model_as_documented(tmp_path: Path) -> None:
    """The reference call encodes like the schema says (category code, epoch seconds), so a
    booster fitted on those numbers registers and is checked, not refused."""
    import lightgbm as lgb

    rng = np.random.default_rng(6)
    n = 200
    merchants = ["fuel", "grocery", "travel"]
    codes = rng.integers(0, 3, n)
    seconds = rng.integers(1_700_000_000, 1_800_000_000, n).astype(np.float64)
    numbers = pd.DataFrame({"amount": rng.gamma(2.0, 50.0, n), "merchant": codes, "when": seconds})
    target = (numbers["amount"] > 100) & (codes == 2)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5},
        lgb.Dataset(numbers.astype(np.float64), target.astype(int)),
        num_boost_round=10,
    )
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    booster.save_model(str(model_dir / "model.txt"))
    data = pd.DataFrame(
        {
            "when": pd.to_datetime(seconds, unit="s", utc=True),
            "merchant": pd.Categorical.from_codes(codes, categories=merchants),
            "amount": numbers["amount"],
        }
    )
    data_path = tmp_path / "train.parquet"
    data.to_parquet(data_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    draft = build_draft(
        model_dir / "model.txt",
        name="t",
        flavor="lightgbm",
        workdir=scratch,
        data_path=data_path,
        code_version="test",
    )
    signed, rows = check_draft(draft, schema_given=False)
    assert rows == n
    assert signed.signature is not None
    assert signed.signature.names == ["amount", "merchant", "when"]
    assert [i.type for i in signed.signature.inputs] == ["float", "category", "timestamp"]
