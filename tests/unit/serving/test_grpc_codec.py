"""gRPC messages <-> codec tensors: typed contents, raw contents, and every malformed form."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("google.protobuf")

from headrace.serving._proto import oip_v2_pb2 as pb
from headrace.serving.codec import InputTensor, OutputTensor
from headrace.serving.errors import InvalidInputError
from headrace.serving.grpc_codec import (
    CONTENTS_FIELDS,
    inputs_from_request,
    requested_outputs,
    response_for,
)


def _request(*tensors: tuple[str, str, list[int]]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="fraud", id="r1")
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


def _only(request: pb.ModelInferRequest) -> InputTensor:
    (tensor,) = inputs_from_request(request)
    return tensor


def test_typed_fp64_contents_become_a_shaped_array() -> None:
    request = _request(("input-0", "FP64", [2, 3]))
    request.inputs[0].contents.fp64_contents.extend([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    tensor = _only(request)
    assert tensor.shape == (2, 3) and tensor.datatype == "FP64"
    assert tensor.data.dtype == np.float64
    np.testing.assert_array_equal(tensor.data, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    ("datatype", "values", "dtype"),
    [
        ("BOOL", [True, False], np.bool_),
        ("INT8", [-128, 127], np.int8),
        ("INT32", [-5, 5], np.int32),
        ("INT64", [2**40, -1], np.int64),
        ("UINT16", [0, 65535], np.uint16),
        ("UINT64", [2**63, 1], np.uint64),
        ("FP32", [0.5, -1.25], np.float32),
    ],
)
def test_every_contents_field_decodes_to_its_datatype(
    datatype: str, values: list[object], dtype: type
) -> None:
    request = _request(("x", datatype, [2]))
    getattr(request.inputs[0].contents, CONTENTS_FIELDS[datatype]).extend(values)
    tensor = _only(request)
    assert tensor.data.dtype == dtype
    assert tensor.data.tolist() == values


def test_bytes_contents_become_text() -> None:
    request = _request(("merchant", "BYTES", [2]))
    request.inputs[0].contents.bytes_contents.extend([b"gaming", b"fuel"])
    assert _only(request).data.tolist() == ["gaming", "fuel"]


def test_raw_contents_decode_little_endian() -> None:
    values = np.arange(6, dtype="<f4").reshape(3, 2)
    request = _request(("input-0", "FP32", [3, 2]))
    request.raw_input_contents.append(values.tobytes())
    np.testing.assert_array_equal(_only(request).data, values)


def test_narrow_int_out_of_range_names_the_input() -> None:
    request = _request(("hour", "INT8", [1]))
    request.inputs[0].contents.int_contents.append(300)
    with pytest.raises(InvalidInputError, match=r"'hour'.*outside INT8's range \[-128, 127\]"):
        inputs_from_request(request)


def test_values_in_another_datatypes_field_are_refused() -> None:
    request = _request(("input-0", "FP64", [2]))
    request.inputs[0].contents.int64_contents.extend([1, 2])
    with pytest.raises(
        InvalidInputError,
        match=r"'input-0' declares datatype FP64 but carries values in contents.int64_contents",
    ):
        inputs_from_request(request)


def test_value_count_must_match_the_shape() -> None:
    request = _request(("input-0", "FP64", [2, 3]))
    request.inputs[0].contents.fp64_contents.extend([1.0, 2.0])
    with pytest.raises(InvalidInputError, match=r"shape \[2, 3\] \(6 values\).*holds 2 values"):
        inputs_from_request(request)


def test_unknown_datatype_is_named() -> None:
    request = _request(("input-0", "FP99", [1]))
    with pytest.raises(InvalidInputError, match="datatype 'FP99'.*not a datatype"):
        inputs_from_request(request)


def test_fp16_needs_raw_contents() -> None:
    with pytest.raises(InvalidInputError, match="FP16.*raw_input_contents"):
        inputs_from_request(_request(("x", "FP16", [1])))


def test_raw_contents_must_pair_with_inputs() -> None:
    request = _request(("a", "FP64", [1]), ("b", "FP64", [1]))
    request.raw_input_contents.append(np.zeros(1).tobytes())
    with pytest.raises(InvalidInputError, match="2 inputs but 1 raw_input_contents"):
        inputs_from_request(request)


def test_raw_byte_count_must_match_the_shape() -> None:
    request = _request(("input-0", "FP64", [2, 5]))
    request.raw_input_contents.append(np.zeros(9).tobytes())
    with pytest.raises(InvalidInputError, match="80 bytes.*72 bytes"):
        inputs_from_request(request)


def test_values_sent_twice_are_refused() -> None:
    request = _request(("input-0", "FP64", [1]))
    request.inputs[0].contents.fp64_contents.append(1.0)
    request.raw_input_contents.append(np.ones(1).tobytes())
    with pytest.raises(InvalidInputError, match="both contents and raw_input_contents"):
        inputs_from_request(request)


def test_requested_outputs() -> None:
    request = _request()
    assert requested_outputs(request) is None
    request.outputs.add(name="scores")
    assert requested_outputs(request) == ["scores"]


def test_response_is_raw_and_tritonclient_reads_it() -> None:
    grpc_client = pytest.importorskip("tritonclient.grpc")
    triton_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    labels = np.empty(2, dtype=object)
    labels[:] = ["legit", "fraud"]
    outputs = [
        OutputTensor(name="predict", datatype="BYTES", shape=(2,), data=labels),
        OutputTensor(name="scores", datatype="FP64", shape=(2,), data=np.array([0.125, 0.875])),
    ]
    response = response_for(_request(), outputs, model_version="3")
    assert (response.model_name, response.model_version, response.id) == ("fraud", "3", "r1")
    theirs = triton_pb2.ModelInferResponse.FromString(response.SerializeToString())
    result = grpc_client.InferResult(theirs)
    assert result.as_numpy("predict").tolist() == [b"legit", b"fraud"]
    assert result.as_numpy("scores").tolist() == [0.125, 0.875]
