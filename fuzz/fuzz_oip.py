"""Coverage-guided fuzzing (atheris) of the Open Inference Protocol decoders.

Run by hand, one target at a time (``pip install atheris``)::

    python fuzz/fuzz_oip.py rest fuzz/corpus/rest -max_total_time=600
    python fuzz/fuzz_oip.py grpc fuzz/corpus/grpc -max_total_time=600

A target feeds the bytes to what a request body meets first: the REST body parser
(JSON and the binary-data extension, with a header length taken from the input) and
the gRPC ``ModelInferRequest`` decoder, then lays the tensors out against a schema as
the server does. `InvalidInputError` is the expected answer to garbage; anything else
raised is a crash atheris reports (with the input saved as ``crash-*``). New inputs
that reach new code go into the corpus directory: commit the small ones.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from headrace.release.schema import Field, Schema
    from headrace.serving._proto import oip_v2_pb2 as pb
    from headrace.serving.codec import columns_from_inputs
    from headrace.serving.errors import InvalidInputError
    from headrace.serving.grpc_codec import inputs_from_request
    from headrace.serving.rest import parse_infer_request

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float"),
        Field(name="count", type="int"),
        Field(name="merchant", type="string"),
        Field(name="flag", type="bool", required=False, nullable=True),
    ]
)
MAX_ELEMENTS = 1 << 16  # keep each run's allocations small, as the server's limit does


def rest(data: bytes) -> None:
    """One REST body: the first two bytes pick a header length (or none)."""
    if len(data) < 2:
        return
    split = int.from_bytes(data[:2], "little")
    body = data[2:]
    header_length = None if split == 0xFFFF else split % (len(body) + 1)
    try:
        request = parse_infer_request(body, header_length=header_length, max_elements=MAX_ELEMENTS)
        columns_from_inputs(SCHEMA, request.inputs, model="fuzz")
    except InvalidInputError:
        pass


def grpc(data: bytes) -> None:
    """One serialized ModelInferRequest (what the gRPC server parses in the RPC)."""
    try:
        request = pb.ModelInferRequest.FromString(data)
    except Exception:  # the server answers these INVALID_ARGUMENT itself
        return
    try:
        inputs = inputs_from_request(request, max_elements=MAX_ELEMENTS)
        columns_from_inputs(SCHEMA, inputs, model="fuzz")
    except InvalidInputError:
        pass


def main() -> None:
    targets = {"rest": rest, "grpc": grpc}
    if len(sys.argv) < 2 or sys.argv[1] not in targets:
        sys.exit(f"usage: {sys.argv[0]} rest|grpc [CORPUS_DIR] [libFuzzer options]")
    target = targets[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
