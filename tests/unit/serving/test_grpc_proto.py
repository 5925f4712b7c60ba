"""headrace's OIP v2 messages are, field for field, the ones tritonclient sends and reads.

Only field numbers and wire types go on the wire, so a message renamed into headrace's own
protobuf package must keep every number, name and type of the protocol's; this compares
each of ours with the descriptor tritonclient (the reference client) was generated from.
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor

triton_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")

from headrace.serving._proto import oip_v2_pb2  # noqa: E402


def _fields(message: Descriptor) -> dict[str, tuple[int, int, bool, str]]:
    """name -> (number, type, repeated, type of a message field by its short name)."""
    return {
        field.name: (
            field.number,
            field.type,
            field.is_repeated,
            field.message_type.name if field.message_type is not None else "",
        )
        for field in message.fields
    }


def _compare(ours: Descriptor, theirs: Descriptor, where: str) -> list[str]:
    problems: list[str] = []
    if _fields(ours) != _fields(theirs):
        problems.append(f"{where}: {_fields(ours)} != {_fields(theirs)}")
    for nested in ours.nested_types:
        if nested.name not in theirs.nested_types_by_name:
            problems.append(f"{where}.{nested.name}: not in tritonclient's message")
            continue
        problems += _compare(
            nested, theirs.nested_types_by_name[nested.name], f"{where}.{nested.name}"
        )
    return problems


OURS = oip_v2_pb2.DESCRIPTOR.message_types_by_name


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_message_matches_the_protocol(name: str) -> None:
    theirs = triton_pb2.DESCRIPTOR.message_types_by_name[name]
    assert _compare(OURS[name], theirs, name) == []


def test_a_request_tritonclient_encodes_decodes_into_ours() -> None:
    request = triton_pb2.ModelInferRequest(model_name="fraud", model_version="3", id="r1")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[2, 3])
    tensor.contents.fp64_contents.extend([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    request.parameters["binary_data_output"].bool_param = True
    request.outputs.add(name="prediction")

    ours = oip_v2_pb2.ModelInferRequest.FromString(request.SerializeToString())

    assert (ours.model_name, ours.model_version, ours.id) == ("fraud", "3", "r1")
    assert list(ours.inputs[0].shape) == [2, 3]
    assert list(ours.inputs[0].contents.fp64_contents) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert ours.parameters["binary_data_output"].bool_param is True
    assert [o.name for o in ours.outputs] == ["prediction"]
    assert ours.SerializeToString() == request.SerializeToString()
