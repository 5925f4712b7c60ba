"""gRPC's OIP v2 messages <-> the transport-neutral tensors of `headrace.serving.codec`.

The gRPC form of a tensor is either typed repeated fields (``contents.fp64_contents`` and
so on, one field per datatype family) or, as tritonclient sends it, one raw little-endian
byte string per input in ``raw_input_contents``. Both become the same `InputTensor` the
HTTP transport builds, so that every check after decoding is shared. Answers always go out
as ``raw_output_contents``: one bytes value per tensor instead of one protobuf element per
value, and the form Triton itself answers with, so every client reads it. An output's
parameters go out as ``InferParameter`` values; one that is a list (the ``classes`` of the
``probabilities`` output) travels as its JSON text, as ``InferParameter`` holds no list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from headrace.serving._proto import oip_v2_pb2 as pb
from headrace.serving.codec import (
    DATATYPES,
    DEFAULT_MAX_ELEMENTS,
    InputTensor,
    OutputTensor,
    array_from_bytes,
    array_from_values,
    array_to_bytes,
    check_shape,
)
from headrace.serving.errors import InvalidInputError, ProtocolError
from headrace.types import Array

__all__ = ["CONTENTS_FIELDS", "inputs_from_request", "requested_outputs", "response_for"]

CONTENTS_FIELDS: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The ``InferTensorContents`` field that carries each datatype (FP16 has none: it travels
only in ``raw_input_contents``)."""

# The numpy dtype of each repeated field as protobuf hands it over (before narrowing).
_WIRE_DTYPES: Final[dict[str, Any]] = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}
_ALL_FIELDS: Final = tuple(dict.fromkeys(CONTENTS_FIELDS.values()))


def inputs_from_request(
    request: pb.ModelInferRequest, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> list[InputTensor]:
    """Decode every input of a request, from its raw bytes or its typed contents.

    `max_elements` bounds the values one tensor may declare; every declared shape is
    checked against it, and against the data present, before anything is allocated.

    Raises
    ------
    InvalidInputError
        When the raw contents do not pair up with the inputs, an input carries its values
        in the field of another datatype, or the values do not fit the datatype and shape
        (see `array_from_values` and `array_from_bytes`). Nothing else: whatever the
        client's message makes a decoder raise is INVALID_ARGUMENT, never INTERNAL.
    """
    try:
        return _inputs(request, max_elements=max_elements)
    except ProtocolError:
        raise
    except Exception as exc:  # any other decoder failure on the client's message
        raise InvalidInputError(
            f"Inference request could not be decoded ({type(exc).__name__}: "
            f"{str(exc)[:200]}): send the Open Inference Protocol's ModelInferRequest"
        ) from None


def _inputs(request: pb.ModelInferRequest, *, max_elements: int) -> list[InputTensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"Request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents: "
            "send one raw_input_contents entry per input, in order, or none and use contents"
        )
    decoded: list[InputTensor] = []
    for index, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        check_shape(shape, name=name, max_elements=max_elements)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInputError(
                    f"Input '{name}' has both contents and raw_input_contents: send its "
                    "values once, in one of them"
                )
            data = array_from_bytes(
                raw[index], datatype=datatype, shape=shape, name=name, max_elements=max_elements
            )
        else:
            data = _from_contents(tensor.contents, datatype=datatype, shape=shape, name=name)
        decoded.append(InputTensor(name=name, datatype=datatype, shape=tuple(shape), data=data))
    return decoded


def _from_contents(
    contents: pb.InferTensorContents, *, datatype: str, shape: Sequence[int], name: str
) -> Array:
    if datatype not in DATATYPES:  # let the shared check word the error
        return array_from_values([], datatype=datatype, shape=shape, name=name)
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidInputError(
            f"Input '{name}' is {datatype}, which InferTensorContents cannot carry: send it "
            "in raw_input_contents (little-endian values)"
        )
    stray = [f for f in _ALL_FIELDS if f != field and len(getattr(contents, f))]
    if stray:
        raise InvalidInputError(
            f"Input '{name}' declares datatype {datatype} but carries values in "
            f"contents.{stray[0]}: put {datatype} values in contents.{field}, or declare the "
            "datatype of the values"
        )
    values = getattr(contents, field)
    if field == "bytes_contents":
        return array_from_values(list(values), datatype=datatype, shape=shape, name=name)
    wire = np.array(values, dtype=_WIRE_DTYPES[field])
    target = DATATYPES[datatype]
    if target.itemsize < wire.dtype.itemsize and target.kind in "iu" and wire.size:
        info = np.iinfo(target)
        low, high = int(wire.min()), int(wire.max())
        if low < info.min or high > info.max:
            raise InvalidInputError(
                f"Input '{name}' holds a value outside {datatype}'s range "
                f"[{info.min}, {info.max}]: declare a wider datatype"
            )
        wire = wire.astype(target)
    return array_from_values(wire, datatype=datatype, shape=shape, name=name)


def requested_outputs(request: pb.ModelInferRequest) -> list[str] | None:
    """The output names a request asks for, or None for every output."""
    return [output.name for output in request.outputs] or None


def response_for(
    request: pb.ModelInferRequest,
    outputs: Sequence[OutputTensor],
    *,
    model_version: str,
    parameters: Mapping[str, str] | None = None,
) -> pb.ModelInferResponse:
    """The response message: the request's model and id, every output as raw bytes.

    Parameters
    ----------
    request
        The request answered (its model name and id are echoed).
    outputs
        The answer's tensors.
    model_version
        The version of the release that answered.
    parameters
        Text parameters of the response (the HTTP answer's ``release`` and
        ``release_digest``).
    """
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=model_version, id=request.id
    )
    for key, value in (parameters or {}).items():
        response.parameters[key].string_param = value
    for output in outputs:
        tensor = response.outputs.add(
            name=output.name, datatype=output.datatype, shape=output.shape
        )
        for key, value in (output.parameters or {}).items():
            _set_parameter(tensor.parameters[key], value)
        response.raw_output_contents.append(array_to_bytes(output.data, datatype=output.datatype))
    return response


def _set_parameter(parameter: pb.InferParameter, value: Any) -> None:
    """One output parameter: ``InferParameter`` holds a bool, an int or a string, so a
    list (the ``classes`` of ``probabilities``) travels as its JSON text."""
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, str):
        parameter.string_param = value
    else:
        parameter.string_param = json.dumps(value)
