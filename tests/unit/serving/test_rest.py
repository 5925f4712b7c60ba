"""The REST body: JSON and the binary-data extension, both ways, and every malformed body."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from headrace.serving.codec import OutputTensor
from headrace.serving.errors import InvalidInputError
from headrace.serving.rest import encode_infer_response, parse_infer_request


def request(*inputs: dict[str, object], **extra: object) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def test_json_inputs_flat_and_nested() -> None:
    parsed = parse_infer_request(
        request(
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]},
            {"name": "y", "shape": [2], "datatype": "INT8", "data": [1, -2]},
            {"name": "z", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
            {"name": "w", "shape": [1, 2], "datatype": "BOOL", "data": [True, False]},
            id="r1",
            outputs=[{"name": "score"}],
        )
    )
    assert parsed.id == "r1"
    assert parsed.outputs == ["score"]
    assert parsed.binary_outputs == frozenset()
    x, y, z, w = parsed.inputs
    assert x.data.dtype == np.float64 and x.data.tolist() == [[1, 2], [3, 4.5]]
    assert y.data.dtype == np.int8 and y.data.tolist() == [1, -2]
    assert z.data.tolist() == ["a", "b"]
    assert w.data.tolist() == [[True, False]]


def test_binary_inputs_follow_the_json_header() -> None:
    values = np.array([[1.5, np.nan]], dtype=np.float32)
    labels = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"c"))
    header = request(
        {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "y", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}},
        {"name": "z", "shape": [1], "datatype": "FP64", "data": [2.0]},
    )
    parsed = parse_infer_request(header + values.tobytes() + labels, header_length=len(header))
    x, y, z = parsed.inputs
    assert x.data.dtype == np.float32 and x.data[0, 0] == 1.5 and np.isnan(x.data[0, 1])
    assert y.data.tolist() == ["ab", "c"]
    assert z.data.tolist() == [2.0]


@pytest.mark.parametrize(
    ("params", "outputs", "binary"),
    [
        ({"binary_data_output": True}, None, None),
        ({"binary_data_output": True}, [{"name": "score"}], frozenset({"score"})),
        (
            {},
            [{"name": "score", "parameters": {"binary_data": True}}, {"name": "prediction"}],
            frozenset({"score"}),
        ),
        ({}, None, frozenset()),
    ],
)
def test_which_outputs_go_binary(
    params: dict[str, object], outputs: list[dict[str, object]] | None, binary: object
) -> None:
    extra: dict[str, object] = {"parameters": params}
    if outputs is not None:
        extra["outputs"] = outputs
    body = request({"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}, **extra)
    assert parse_infer_request(body).binary_outputs == binary


@pytest.mark.parametrize(
    ("body", "header_length", "needle"),
    [
        (b"{", None, "not valid JSON"),
        (b'{"inputs": [{"name": 1}]}', None, "Expected `str`, got `int` - at `$.inputs[0].name`"),
        (b'{"inputs": "x"}', None, "Expected `array`, got `str` - at `$.inputs`"),
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP64"}]}',
            None,
            "Input 'x' has no data",
        ),
        (
            b'{"inputs":[{"name":"x","shape":[2,1],"datatype":"FP64","data":[[1],[2,3]]}]}',
            None,
            "rows of different lengths",
        ),
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1.5]}]}',
            None,
            "expected `int`, got `float` at `x[0]`",
        ),
        (
            b'{"inputs":[{"name":"x","shape":[1,1,1],"datatype":"FP64","data":[[[1]]]}]}',
            None,
            None,  # deeper nesting is decoded generically (the layout refuses it later)
        ),
        (b'{"inputs": []}', 99, "Inference-Header-Content-Length is 99 but the body has 14"),
        (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP64",'
            b'"parameters":{"binary_data_size":8}}]}',
            -1,
            None,  # -1 means "header length = whole body": filled in by the test
        ),
    ],
)
def test_malformed_bodies_are_refused(
    body: bytes, header_length: int | None, needle: str | None
) -> None:
    if header_length == -1:
        with pytest.raises(InvalidInputError, match="only 0 bytes of binary data remain"):
            parse_infer_request(body, header_length=len(body))
        return
    if needle is None:
        parsed = parse_infer_request(body, header_length=header_length)
        assert parsed.inputs[0].data.shape == (1, 1, 1)
        return
    with pytest.raises(InvalidInputError) as info:
        parse_infer_request(body, header_length=header_length)
    assert needle in str(info.value)


def test_binary_data_nobody_claims_is_refused() -> None:
    header = request({"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]})
    with pytest.raises(InvalidInputError, match="8 bytes of binary data that no input claims"):
        parse_infer_request(header + b"\x00" * 8, header_length=len(header))
    bad_size = request(
        {"name": "x", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": "8"}}
    )
    with pytest.raises(InvalidInputError, match="binary_data_size '8'"):
        parse_infer_request(bad_size, header_length=len(bad_size))


def test_response_json_and_binary() -> None:
    outputs = [
        OutputTensor("prediction", "BYTES", (2,), np.array(["fraud", "legit"], dtype=object)),
        OutputTensor("score", "FP64", (2,), np.array([0.9, 0.1])),
    ]
    body, header = encode_infer_response(
        model="fraud", version="3", request_id="r", outputs=outputs, parameters={"a": 1}
    )
    assert header is None
    assert orjson.loads(body) == {
        "model_name": "fraud",
        "model_version": "3",
        "id": "r",
        "parameters": {"a": 1},
        "outputs": [
            {"name": "prediction", "datatype": "BYTES", "shape": [2], "data": ["fraud", "legit"]},
            {"name": "score", "datatype": "FP64", "shape": [2], "data": [0.9, 0.1]},
        ],
    }
    body, header = encode_infer_response(
        model="fraud",
        version="3",
        request_id=None,
        outputs=outputs,
        binary_outputs=frozenset({"score"}),
    )
    assert header is not None
    document = orjson.loads(body[:header])
    assert "id" not in document
    assert document["outputs"][1]["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(body[header:], dtype="<f8").tolist() == [0.9, 0.1]
    everything, header = encode_infer_response(
        model="m", version="1", request_id=None, outputs=outputs, binary_outputs=None
    )
    assert header is not None
    assert len(everything) - header == (4 + 5) * 2 + 16
