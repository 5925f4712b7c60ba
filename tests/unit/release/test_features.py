from __future__ import annotations

from pathlib import Path

import pytest

from headrace.errors import SchemaError
from headrace.release.features import (
    FeatureSpec,
    features_from_builtins,
    load_features,
    model_inputs,
)
from headrace.release.schema import Field, Schema

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float"),
        Field(name="age", type="int"),
        Field(name="merchant", type="category", values=["a", "b"]),
    ]
)


def write(tmp_path: Path, text: str, name: str = "features.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_features(tmp_path: Path) -> None:
    spec = load_features(
        write(tmp_path, "inputs: [merchant, amount]\ndefinitions:\n  spend_1h: {sum: amount}\n")
    )
    assert spec.inputs == ["merchant", "amount"]
    assert spec.definitions == {"spend_1h": {"sum": "amount"}}
    assert model_inputs(SCHEMA, spec) == ["merchant", "amount"]


def test_default_inputs_are_schema_order() -> None:
    assert model_inputs(SCHEMA) == ["amount", "age", "merchant"]
    assert model_inputs(SCHEMA, FeatureSpec()) == ["amount", "age", "merchant"]


def test_unknown_inputs_are_all_named() -> None:
    with pytest.raises(SchemaError) as info:
        model_inputs(SCHEMA, FeatureSpec(inputs=["amount", "ammount", "zip"]))
    message = str(info.value)
    assert "'ammount', 'zip' are not fields of the schema" in message
    assert "its fields are amount, age, merchant" in message
    assert message.endswith("add them to the schema or remove them from `inputs`")


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"unknown key 'input' at \$ in .*features\.yaml"):
        load_features(write(tmp_path, "input: [a]\n"))
    with pytest.raises(SchemaError, match=r"input 'a' is listed twice at \$\.inputs\[1\]"):
        load_features(write(tmp_path, "inputs: [a, a]\n"))
    with pytest.raises(SchemaError, match=r"inputs is an empty list at \$\.inputs"):
        load_features(write(tmp_path, "inputs: []\n"))
    with pytest.raises(SchemaError, match=r"Features file '.*' not found"):
        load_features(tmp_path / "missing.yaml")
    with pytest.raises(SchemaError, match=r"at \$\.inputs\[0\] in manifest"):
        features_from_builtins({"inputs": [1]})
