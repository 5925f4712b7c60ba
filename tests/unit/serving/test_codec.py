"""OIP v2 tensors <-> columns: both request forms, every datatype, every malformed input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from headrace.inference.validate import Rejection
from headrace.release.schema import Field, Schema
from headrace.serving.codec import (
    DATATYPES,
    InputTensor,
    array_from_bytes,
    array_from_values,
    array_to_bytes,
    columns_from_inputs,
    datatype_of,
    outputs_from_part,
    raise_for_rejections,
)
from headrace.serving.errors import InferenceFailedError, InvalidInputError

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float"),
        Field(name="count", type="int"),
        Field(name="note", type="string", required=False, nullable=True),
    ]
)


def tensor(name: str, datatype: str, shape: list[int], data: list[object]) -> InputTensor:
    return InputTensor(
        name=name,
        datatype=datatype,
        shape=tuple(shape),
        data=array_from_values(data, datatype=datatype, shape=shape, name=name),
    )


# -- values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "values", "dtype"),
    [
        ("BOOL", [True, False], np.bool_),
        ("INT8", [-128, 127], np.int8),
        ("INT16", [1, 2], np.int16),
        ("INT32", [1, 2], np.int32),
        ("INT64", [2**62, -(2**62)], np.int64),
        ("UINT8", [0, 255], np.uint8),
        ("UINT16", [0, 65535], np.uint16),
        ("UINT32", [0, 2**32 - 1], np.uint32),
        ("UINT64", [0, 2**64 - 1], np.uint64),
        ("FP16", [0.5, 1], np.float64),
        ("FP32", [0.1, 2], np.float64),
        ("FP64", [0.1, -3], np.float64),
        ("BYTES", ["a", "é"], object),
    ],
)
def test_every_datatype_decodes_from_values(
    datatype: str, values: list[object], dtype: type
) -> None:
    out = array_from_values(values, datatype=datatype, shape=[2], name="x")
    assert out.dtype == np.dtype(dtype)
    assert out.tolist() == values


def test_json_fp32_keeps_the_decimal_value() -> None:
    out = array_from_values([0.1], datatype="FP32", shape=[1], name="x")
    assert out[0] == 0.1  # not float32(0.1) == 0.10000000149...


def test_nested_values_are_row_major() -> None:
    out = array_from_values([[1, 2, 3], [4, 5, 6]], datatype="FP64", shape=[2, 3], name="x")
    assert out.tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    ("datatype", "values", "needle"),
    [
        ("FP32", [1.0, "2.5"], "expected `float`, got `str` at `x[1]`"),
        ("FP64", [1.0, True], "expected `float`, got `bool` at `x[1]`"),
        ("INT64", [1, 2.5], "expected `int`, got `float` at `x[1]`"),
        ("BOOL", [1, 0], "expected `bool`, got `int` at `x[0]`"),
        ("INT8", [1, 300], "outside INT8's range [-128, 127]"),
        ("UINT8", [-1, 3], "outside UINT8's range"),
        ("BYTES", ["a", 3], "value 1 is `int`"),
        ("FP128", [1.0, 2.0], "'FP128', which is not a datatype of the protocol"),
    ],
)
def test_wrong_values_name_the_input_and_position(
    datatype: str, values: list[object], needle: str
) -> None:
    with pytest.raises(InvalidInputError, match="Input 'x'") as info:
        array_from_values(values, datatype=datatype, shape=[2], name="x")
    assert needle in str(info.value)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("shape", "values", "needle"),
    [
        ([3], [1.0, 2.0], "has shape [3] (3 values) but its data holds 2 values"),
        ([2, 2], [[1.0, 2.0], [3.0]], "holds 3 values"),
        ([], [1.0], "a shape is a non-empty list of non-negative integers"),
        ([-1], [1.0], "a shape is a non-empty list"),
    ],
)
def test_wrong_shape_is_refused(shape: list[int], values: list[object], needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        array_from_values(values, datatype="FP64", shape=shape, name="x")
    assert needle in str(info.value)


def test_numpy_values_must_match_the_datatype() -> None:
    good = array_from_values(np.array([1.0, 2.0]), datatype="FP32", shape=[2], name="x")
    assert good.tolist() == [1.0, 2.0]
    with pytest.raises(InvalidInputError, match="declares datatype INT64 but holds float64"):
        array_from_values(np.array([1.0, 2.0]), datatype="INT64", shape=[2], name="x")


# -- binary ----------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_binary_round_trip(datatype: str) -> None:
    values = np.array([[0, 1, 1], [1, 0, 1]], dtype=DATATYPES[datatype])
    raw = array_to_bytes(values, datatype=datatype)
    back = array_from_bytes(raw, datatype=datatype, shape=[2, 3], name="x")
    assert back.dtype == DATATYPES[datatype]
    assert back.tolist() == values.tolist()


def test_binary_bytes_round_trip() -> None:
    values = np.array(["fraud", "", "é"], dtype=object)
    raw = array_to_bytes(values, datatype="BYTES")
    assert raw[:4] == struct.pack("<I", 5)
    back = array_from_bytes(raw, datatype="BYTES", shape=[3], name="x")
    assert back.tolist() == ["fraud", "", "é"]


@pytest.mark.parametrize(
    ("datatype", "raw", "needle"),
    [
        ("FP32", b"\x00" * 7, "(8 bytes) but its binary data is 7 bytes"),
        ("BOOL", b"\x00\x02", "a byte other than 0 or 1"),
        ("BYTES", struct.pack("<I", 9) + b"abcd", "claims 9 bytes but only 4 remain"),
        ("BYTES", struct.pack("<I", 4) + b"abcd", "ends after 1 of 2 elements"),
        ("BYTES", (struct.pack("<I", 1) + b"a") * 2 + b"zz", "2 bytes past its 2 elements"),
        ("BYTES", (struct.pack("<I", 1) + b"\xff") * 2, "is not UTF-8"),
    ],
)
def test_malformed_binary_is_refused(datatype: str, raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        array_from_bytes(raw, datatype=datatype, shape=[2], name="x")
    assert needle in str(info.value)


# -- layouts ---------------------------------------------------------------------------


def test_one_2d_tensor_is_split_in_schema_order() -> None:
    narrow = Schema(fields=[Field(name="a", type="float"), Field(name="b", type="float")])
    columns, rows = columns_from_inputs(
        narrow, [tensor("input-0", "FP64", [2, 2], [1, 2, 3, 4])], model="m"
    )
    assert rows == 2
    assert columns["a"].tolist() == [1, 3]
    assert columns["b"].tolist() == [2, 4]


def test_named_inputs_become_columns_and_optional_ones_may_be_left_out() -> None:
    columns, rows = columns_from_inputs(
        SCHEMA,
        [tensor("count", "INT64", [2, 1], [1, 2]), tensor("amount", "FP32", [2], [0.5, 1.5])],
        model="m",
    )
    assert rows == 2
    assert set(columns) == {"amount", "count"}
    assert columns["count"].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([], "has no inputs"),
        ([tensor("x", "FP64", [1, 2], [1, 2])], "takes 3 fields in schema order"),
        ([tensor("amount", "FP64", [1], [1.0])], "lacks input(s) count, required"),
        (
            [tensor("amount", "FP64", [1], [1.0]), tensor("bogus", "FP64", [1], [1.0])],
            "Input 'bogus' is not a field of model 'm'",
        ),
        (
            [tensor("amount", "FP64", [1], [1.0]), tensor("amount", "FP64", [1], [1.0])],
            "appears twice",
        ),
        (
            [tensor("amount", "FP64", [2], [1.0, 2.0]), tensor("count", "INT64", [1], [1])],
            "Input 'count' has 1 rows but input 'amount' has 2",
        ),
        (
            [tensor("amount", "FP64", [1, 2], [1.0, 2.0]), tensor("count", "INT64", [1], [1])],
            "Input 'amount' has shape [1, 2]: a field's input is 1-D",
        ),
    ],
)
def test_inputs_that_fit_no_form_are_refused(inputs: list[InputTensor], needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        columns_from_inputs(SCHEMA, inputs, model="m")
    assert needle in str(info.value)


# -- outputs ---------------------------------------------------------------------------


def test_outputs_carry_prediction_and_score_with_their_datatypes() -> None:
    labels = np.array(["legit", "fraud"], dtype=object)
    scores = np.array([0.1, 0.9])
    outputs = outputs_from_part(labels, scores, model="m")
    assert [(o.name, o.datatype, o.shape) for o in outputs] == [
        ("prediction", "BYTES", (2,)),
        ("score", "FP64", (2,)),
    ]
    only = outputs_from_part(labels, scores, requested=["score"], model="m")
    assert [o.name for o in only] == ["score"]
    with pytest.raises(InvalidInputError, match="asks for output 'proba'"):
        outputs_from_part(labels, None, requested=["proba"], model="m")
    with pytest.raises(InvalidInputError, match="has outputs prediction"):
        outputs_from_part(labels, None, requested=["score"], model="m")


@pytest.mark.parametrize(
    ("values", "datatype"),
    [
        (np.array([1, 2]), "INT64"),
        (np.array([1.5], dtype=np.float32), "FP32"),
        (np.array([True]), "BOOL"),
        (np.array(["a"]), "BYTES"),
        (np.array([1, 2], dtype=object), "INT64"),
        (np.array([1, 2.5], dtype=object), "FP64"),
        (np.array([True], dtype=object), "BOOL"),
        (np.array(["a", 1], dtype=object), "BYTES"),
    ],
)
def test_datatype_of_predictions(values: np.ndarray, datatype: str) -> None:
    assert datatype_of(values) == datatype


def test_rejections_become_400_for_bad_rows_and_500_for_model_failures() -> None:
    raise_for_rejections([], model="m", release="m:1", n_rows=2)  # nothing to say
    bad = [Rejection(row=1, field="amount", reason="NaN not allowed - at `$.amount`")]
    with pytest.raises(InvalidInputError) as info:
        raise_for_rejections(bad, model="m", release="m:1", n_rows=2)
    assert "1 of 2 rows" in str(info.value)
    assert "row 1: NaN not allowed - at `$.amount`" in str(info.value)
    failed = [Rejection(row=0, field=None, reason="Model raised RuntimeError: x", stage="predict")]
    with pytest.raises(InferenceFailedError, match="Release m:1 of model 'm' raised on 1 of"):
        raise_for_rejections(failed, model="m", release="m:1", n_rows=1)


def test_output_names_match_the_repository_metadata() -> None:
    from headrace.serving import OUTPUT_NAMES, OUTPUT_PREDICTION, OUTPUT_SCORE

    assert OUTPUT_NAMES == (OUTPUT_PREDICTION, OUTPUT_SCORE)
