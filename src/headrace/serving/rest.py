"""The REST body of an inference request and response: JSON, and the binary-data extension.

JSON bodies follow the Open Inference Protocol v2. Tensor data may instead travel after
the JSON header as raw bytes (Triton's binary tensor data extension, what `tritonclient`
sends by default): the ``Inference-Header-Content-Length`` header gives the JSON's
length, each binary input says its byte count in ``parameters.binary_data_size``, and an
output asked for with ``parameters.binary_data: true`` (or every output, with the request
parameter ``binary_data_output: true``) comes back the same way.

Decoding is built for the hot path: the request is one msgspec pass into structs with
each tensor's data kept raw, then each tensor's data is decoded by a decoder typed for its
datatype (strict: a bool is not a number, ``"1.5"`` is not a float). The response is one
orjson pass over numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import orjson

from headrace.serving.codec import (
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

__all__ = ["InferRequest", "encode_infer_response", "parse_infer_request"]

_NO_DATA: Final = msgspec.Raw(b"")


class _Input(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: msgspec.Raw = _NO_DATA


class _Output(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class _Request(msgspec.Struct):
    inputs: list[_Input]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[_Output] | None = None


_REQUEST_DECODER: Final = msgspec.json.Decoder(_Request)

_ELEMENT_TYPES: Final[dict[str, type]] = {
    "BOOL": bool,
    **{f"INT{bits}": int for bits in (8, 16, 32, 64)},
    **{f"UINT{bits}": int for bits in (8, 16, 32, 64)},
    **{f"FP{bits}": float for bits in (16, 32, 64)},
    "BYTES": str,
}
_FLAT: Final = {dt: msgspec.json.Decoder(list[t]) for dt, t in _ELEMENT_TYPES.items()}  # type: ignore[valid-type]
_NESTED: Final = {dt: msgspec.json.Decoder(list[list[t]]) for dt, t in _ELEMENT_TYPES.items()}  # type: ignore[valid-type]
_FP_AS_FLOAT64: Final = frozenset({"FP16", "FP32", "FP64"})


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded inference request.

    Attributes
    ----------
    id
        The client's request id, echoed in the response.
    inputs
        The tensors, decoded and shaped.
    outputs
        The output names asked for, or None for all.
    binary_outputs
        The outputs to send as binary data (the extension), or None for all of them
        (``binary_data_output: true``); empty for a pure JSON response.
    """

    id: str | None
    inputs: list[InputTensor]
    outputs: list[str] | None
    binary_outputs: frozenset[str] | None


def parse_infer_request(
    body: bytes, *, header_length: int | None = None, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> InferRequest:
    """Decode a request body (JSON, or a JSON header followed by binary tensor data).

    Parameters
    ----------
    body
        The whole request body.
    header_length
        The ``Inference-Header-Content-Length`` header: the JSON's length in bytes, the
        rest being binary tensor data; None when the body is JSON only.
    max_elements
        The most values one tensor may declare (checked before anything is allocated).

    Raises
    ------
    InvalidInputError
        When the body is not JSON, does not have the protocol's shape, or a tensor's data
        does not match its datatype and shape. Nothing else: the body is the client's, so
        whatever it makes a decoder raise is answered 400, never 500.
    """
    try:
        return _parse(body, header_length=header_length, max_elements=max_elements)
    except ProtocolError:
        raise
    except RecursionError:
        raise InvalidInputError(
            "Inference request nests JSON too deeply to decode: send tensor data flat "
            "(row-major) or nested as its shape, and parameters a few levels deep"
        ) from None
    except Exception as exc:  # any other decoder failure on the client's bytes
        raise InvalidInputError(
            f"Inference request could not be decoded ({type(exc).__name__}: "
            f"{str(exc)[:200]}): send the Open Inference Protocol's JSON"
        ) from None


def _parse(body: bytes, *, header_length: int | None, max_elements: int) -> InferRequest:
    if header_length is None:
        header, binary = body, b""
    elif not 0 <= header_length <= len(body):
        raise InvalidInputError(
            f"Inference-Header-Content-Length is {header_length} but the body has "
            f"{len(body)} bytes: it must be the length of the JSON part of the body"
        )
    else:
        header, binary = body[:header_length], body[header_length:]
    try:
        request = _REQUEST_DECODER.decode(header)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(
            f'Invalid inference request: {exc}. Send {{"inputs": [{{"name", "shape", '
            '"datatype", "data"}]}} as the Open Inference Protocol describes'
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidInputError(
            f"Request body is not valid JSON ({exc}): send one JSON object; NaN and "
            "Infinity are not JSON, send them with the binary tensor data extension"
        ) from None
    inputs = _inputs(request.inputs, memoryview(binary), max_elements=max_elements)
    outputs = None if request.outputs is None else [o.name for o in request.outputs]
    return InferRequest(
        id=request.id,
        inputs=inputs,
        outputs=outputs,
        binary_outputs=_binary_outputs(request),
    )


def _inputs(specs: Sequence[_Input], binary: memoryview, *, max_elements: int) -> list[InputTensor]:
    tensors: list[InputTensor] = []
    offset = 0
    for spec in specs:
        # Before any data: a few bytes may declare a shape of billions.
        check_shape(spec.shape, name=spec.name, max_elements=max_elements)
        size = None if spec.parameters is None else spec.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInputError(
                    f"Input '{spec.name}' has binary_data_size {size!r}: give the byte "
                    "count of its binary data as a non-negative integer"
                )
            if offset + size > len(binary):
                raise InvalidInputError(
                    f"Input '{spec.name}' has binary_data_size {size} but only "
                    f"{len(binary) - offset} bytes of binary data remain after the JSON "
                    "header: check Inference-Header-Content-Length and the sizes"
                )
            data = array_from_bytes(
                binary[offset : offset + size],
                datatype=spec.datatype,
                shape=spec.shape,
                name=spec.name,
                max_elements=max_elements,
            )
            offset += size
        else:
            data = _json_data(spec)
        tensors.append(InputTensor(spec.name, spec.datatype, tuple(spec.shape), data))
    if offset != len(binary):
        raise InvalidInputError(
            f"The body has {len(binary) - offset} bytes of binary data that no input claims: "
            "give every binary input its binary_data_size"
        )
    return tensors


def _json_data(spec: _Input) -> Array:
    raw = spec.data
    if not len(raw):
        raise InvalidInputError(
            f"Input '{spec.name}' has no data: give it `data` (JSON values, row-major) or "
            "binary data with parameters.binary_data_size"
        )
    flat = _FLAT.get(spec.datatype)
    if flat is None:  # unknown datatype: let the codec say so
        return array_from_values([], datatype=spec.datatype, shape=spec.shape, name=spec.name)
    nested = bytes(memoryview(raw)[:2]) == b"[["
    try:
        values = (_NESTED if nested else _FLAT)[spec.datatype].decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if nested and not message.startswith("Number out of range"):
            # deeper nesting than 2-D: the generic path checks it (and may refuse)
            return array_from_values(
                msgspec.json.decode(raw), datatype=spec.datatype, shape=spec.shape, name=spec.name
            )
        message = message.replace("- at `$", f"at `{spec.name}").replace("Expected", "expected", 1)
        raise InvalidInputError(
            f"Input '{spec.name}' declares datatype {spec.datatype} but {message}: send "
            f"{spec.datatype} values or declare the datatype of the data"
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidInputError(f"Input '{spec.name}' data is not valid JSON: {exc}") from None
    if spec.datatype in _FP_AS_FLOAT64:
        return _reshape(_numbers(values, np.float64, spec), spec)
    if spec.datatype == "BYTES":
        out = np.empty(len(values), dtype=object) if not nested else None
        if out is not None:
            out[:] = values
            return _reshape(out, spec)
        return _reshape(_numbers(values, object, spec), spec)
    return array_from_values(values, datatype=spec.datatype, shape=spec.shape, name=spec.name)


def _numbers(values: list[Any], dtype: Any, spec: _Input) -> Array:
    try:
        return np.array(values, dtype=dtype)
    except ValueError:
        raise InvalidInputError(
            f"Input '{spec.name}' has rows of different lengths: a nested tensor must be "
            f"rectangular, shape {spec.shape}"
        ) from None


def _reshape(values: Array, spec: _Input) -> Array:
    if any(not isinstance(d, int) or d < 0 for d in spec.shape) or not spec.shape:
        return array_from_values(values, datatype=spec.datatype, shape=spec.shape, name=spec.name)
    count = 1
    for d in spec.shape:
        count *= d
    if values.size != count:
        raise InvalidInputError(
            f"Input '{spec.name}' has shape {spec.shape} ({count} values) but its data "
            f"holds {values.size} values: send exactly prod(shape) values, row-major"
        )
    return values.reshape(spec.shape)


def _binary_outputs(request: _Request) -> frozenset[str] | None:
    everything = bool(request.parameters and request.parameters.get("binary_data_output") is True)
    chosen = frozenset(
        o.name
        for o in request.outputs or ()
        if o.parameters is not None and o.parameters.get("binary_data") is True
    )
    if everything and not request.outputs:
        return None
    return chosen | (frozenset(o.name for o in request.outputs or ()) if everything else chosen)


def encode_infer_response(
    *,
    model: str,
    version: str,
    request_id: str | None,
    outputs: Sequence[OutputTensor],
    binary_outputs: frozenset[str] | None = frozenset(),
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Encode the response body.

    Parameters
    ----------
    model, version
        The model name as requested and the version that answered.
    request_id
        The request's id, echoed back when given.
    outputs
        The output tensors.
    binary_outputs
        The outputs to send as binary data after the JSON, None for all of them.
    parameters
        Response parameters (which release answered).

    Returns
    -------
    tuple
        The body and, when binary data follows the JSON, the JSON's length (the
        ``Inference-Header-Content-Length`` header), else None.
    """
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in outputs:
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        parameters_of = dict(output.parameters) if output.parameters else {}
        if binary_outputs is None or output.name in binary_outputs:
            blob = array_to_bytes(output.data, datatype=output.datatype)
            parameters_of["binary_data_size"] = len(blob)
            blobs.append(blob)
        elif output.data.dtype.kind == "O":
            tensor["data"] = output.data.reshape(-1).tolist()
        else:
            # Flat, row-major, as the protocol lays out tensor data of any shape.
            tensor["data"] = output.data.reshape(-1)
        if parameters_of:
            tensor["parameters"] = parameters_of
        tensors.append(tensor)
    document: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        document["id"] = request_id
    if parameters:
        document["parameters"] = parameters
    document["outputs"] = tensors
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
