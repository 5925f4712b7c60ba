"""Hostile requests cost nothing and fail as the client's mistake (issue 10, defects 2 and 4).

A few bytes declaring a tensor of billions of values are refused before anything is
allocated (measured with tracemalloc, not with a clock); nesting past any tensor's depth,
out-of-range numbers and any other decoder failure are a 400, never a 500; repeated
error logs are rate-limited; the bearer scheme is read in any case.
"""

from __future__ import annotations

import json
import logging
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from headrace.serving._proto import oip_v2_pb2 as pb
from headrace.serving.auth import bearer_token, token_matches
from headrace.serving.codec import MAX_DIMS, array_from_bytes, array_from_values
from headrace.serving.errors import InvalidInputError
from headrace.serving.grpc_codec import inputs_from_request
from headrace.serving.logfilter import RateLimitFilter
from headrace.serving.rest import parse_infer_request

HUGE = 500_000_000  # the 284-byte request declared this many BYTES values
DATATYPES = ["BOOL", "INT8", "INT32", "INT64", "UINT8", "UINT64", "FP16", "FP32", "FP64", "BYTES"]


def peak_bytes(call: Callable[[], Any]) -> int:
    """The most memory Python allocated while `call` ran (it must raise InvalidInputError)."""
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def binary_body(datatype: str, shape: list[int], data: bytes) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    return header + data, len(header)


def raw_body(*, datatype: str, shape: str, data: str, parameters: str = "{}") -> bytes:
    """A request body from JSON text pieces (data a JSON encoder would refuse to write)."""
    tensor = '{"name":"x","shape":' + shape + ',"datatype":"' + datatype + '","data":' + data
    return ('{"inputs":[' + tensor + '}],"parameters":' + parameters + "}").encode()


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("shape", [[HUGE], [1, HUGE], [2_000_000_000], [HUGE, HUGE]])
def test_a_huge_declared_shape_without_data_allocates_nothing_over_http(
    datatype: str, shape: list[int]
) -> None:
    body, length = binary_body(datatype, shape, b"")
    assert peak_bytes(lambda: parse_infer_request(body, header_length=length)) < 1_000_000
    json_body = json.dumps(
        {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": []}]}
    ).encode()
    assert peak_bytes(lambda: parse_infer_request(json_body)) < 1_000_000


@pytest.mark.parametrize("count", [10, 1000, 4_000_000])
def test_bytes_elements_are_counted_against_the_data_present_before_allocating(
    count: int,
) -> None:
    # Under the element limit, but the 12 bytes sent hold at most 3 elements.
    data = struct.pack("<I", 0) * 3
    body, length = binary_body("BYTES", [count], data)
    with pytest.raises(InvalidInputError, match=r"hold at most 3"):
        parse_infer_request(body, header_length=length)
    assert peak_bytes(lambda: parse_infer_request(body, header_length=length)) < 1_000_000


def test_the_element_limit_is_the_configured_one() -> None:
    body = b'{"inputs":[{"name":"x","shape":[2,3],"datatype":"FP64","data":[1,2,3,4,5,6]}]}'
    assert parse_infer_request(body, max_elements=6).inputs[0].shape == (2, 3)
    with pytest.raises(InvalidInputError, match=r"limit of 5 values per tensor"):
        parse_infer_request(body, max_elements=5)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_a_huge_declared_shape_allocates_nothing_over_grpc(datatype: str) -> None:
    raw = pb.ModelInferRequest(model_name="m")
    raw.inputs.add(name="x", datatype=datatype, shape=[HUGE])
    raw.raw_input_contents.append(b"")
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="x", datatype=datatype, shape=[HUGE])
    for request in (raw, typed):
        message = request.SerializeToString()
        assert len(message) < 64  # the 25-byte message, give or take
        decoded = pb.ModelInferRequest.FromString(message)
        assert peak_bytes(lambda r=decoded: inputs_from_request(r)) < 1_000_000


def test_too_many_dimensions_are_refused() -> None:
    shape = [1] * (MAX_DIMS + 1)
    with pytest.raises(InvalidInputError, match=r"at most 32"):
        array_from_values([1.0], datatype="FP64", shape=shape, name="x")
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1] * 100, "datatype": "FP64", "data": [1.0]}]}
    ).encode()
    with pytest.raises(InvalidInputError, match=r"100 dimensions"):
        parse_infer_request(body)
    with pytest.raises(InvalidInputError, match=r"dimensions"):
        array_from_bytes(b"\x00" * 8, datatype="FP64", shape=[1] * 70, name="x")


@pytest.mark.parametrize("depth", [40, 900, 1_000, 5_000, 100_000])
def test_deep_nesting_in_data_is_a_client_error(depth: int) -> None:
    data = "[" * depth + "1.0" + "]" * depth
    for datatype in ("FP64", "INT64", "BYTES", "BOOL"):
        body = raw_body(datatype=datatype, shape="[1,1]", data=data)
        with pytest.raises(InvalidInputError):
            parse_infer_request(body)


def test_deep_nesting_in_parameters_is_a_client_error() -> None:
    nested = '{"a":' * 2_000 + "1" + "}" * 2_000
    body = raw_body(datatype="FP64", shape="[1]", data="[1]", parameters=nested)
    with pytest.raises(InvalidInputError, match=r"nests JSON too deeply"):
        parse_infer_request(body)


@pytest.mark.parametrize(
    "data",
    ["[[1e400, 1]]", "[[[1e400]], [[1]]]", "[1e400, 1]", "[[-1e999, 2]]", "[[1, 2e308]]"],
)
def test_numbers_out_of_range_are_a_client_error(data: str) -> None:
    body = raw_body(datatype="FP64", shape="[1,2]", data=data)
    with pytest.raises(InvalidInputError, match=r"Number out of range|could not be decoded"):
        parse_infer_request(body)


def test_grpc_nesting_and_wrong_fields_are_client_errors() -> None:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype="FP16", shape=[1])
    tensor.contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInputError, match=r"raw_input_contents"):
        inputs_from_request(request)


# -- the log limiter ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeated_error_logs_are_rate_limited_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    logger = logging.getLogger("headrace.test.ratelimit")
    limiter = RateLimitFilter(burst=3, interval_s=60.0, clock=clock)
    logger.addFilter(limiter)
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            for i in range(1_000):
                logger.warning("request failed: %s", f"row {i}")
            logger.warning("another kind: %d", 1)  # its own budget
            assert [r.getMessage() for r in caplog.records] == [
                "request failed: row 0",
                "request failed: row 1",
                "request failed: row 2",
                "another kind: 1",
            ]
            caplog.clear()
            clock.now = 61.0  # a new window: the first line says what was dropped
            logger.warning("request failed: %s", "row again")
            assert [r.getMessage() for r in caplog.records] == [
                "request failed: row again (997 more like this were not logged)"
            ]
    finally:
        logger.removeFilter(limiter)


def test_the_serving_loggers_are_rate_limited() -> None:
    import headrace.serving.app
    import headrace.serving.grpc_server  # noqa: F401

    for name in ("headrace.serving.app", "headrace.serving.grpc_server"):
        filters = logging.getLogger(name).filters
        assert any(isinstance(f, RateLimitFilter) for f in filters), name


# -- bearer tokens --------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [b"Bearer tok", b"bearer tok", b"BEARER tok", b"BeArEr   tok", "bearer tok"]
)
def test_the_bearer_scheme_is_case_insensitive(header: bytes | str) -> None:
    assert bearer_token(header) == b"tok"
    assert token_matches(header, b"tok")


@pytest.mark.parametrize("header", [None, b"", b"Basic tok", b"Bearertok", b"tok", b"Bearer x"])
def test_other_schemes_and_tokens_do_not_match(header: bytes | None) -> None:
    assert not token_matches(header, b"tok")
