"""The opt-in ``probabilities`` output (issue 9): ``[rows, classes]`` FP64, class names as a
parameter, only when asked for; sliced per request by the batcher; on every wire form."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from headrace.inference.service import InferenceService
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.base import ModelOutput
from headrace.serving._proto import oip_v2_pb2 as pb
from headrace.serving.batching import AdaptiveBatcher, BatchPart
from headrace.serving.codec import OUTPUT_PROBABILITIES, outputs_from_part
from headrace.serving.errors import InvalidInputError
from headrace.serving.grpc_codec import response_for
from headrace.serving.rest import encode_infer_response
from headrace.types import Matrix

SCHEMA = Schema(fields=[Field(name="x", type="float"), Field(name="y", type="float")])
CLASSES = ("setosa", "versicolor", "virginica")


class ThreeClassModel:
    """Row i gets the probabilities softmax([x, y, 0]) and the most probable class."""

    flavor = "testing"

    def predict(self, matrix: Matrix) -> ModelOutput:
        logits = np.column_stack([matrix[:, 0], matrix[:, 1], np.zeros(len(matrix))])
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        proba = exp / exp.sum(axis=1, keepdims=True)
        classes = np.array(CLASSES, dtype=object)
        return ModelOutput(
            predictions=classes[proba.argmax(axis=1)], probabilities=proba, classes=classes
        )


def _softmax(x: float, y: float) -> list[float]:
    logits = np.array([x, y, 0.0])
    exp = np.exp(logits - logits.max())
    return (exp / exp.sum()).tolist()


def _service() -> InferenceService:
    return InferenceService(
        ThreeClassModel(),
        schema=SCHEMA,
        inputs=["x", "y"],
        config=ReleaseConfig(),
        release="iris:1",
        release_digest="sha256:0",
    )


def _outputs(requested: list[str] | None, *, with_probabilities: bool = True) -> Any:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    predictions = np.array(["setosa", "virginica"], dtype=object)
    return outputs_from_part(
        predictions,
        proba.max(axis=1),
        requested=requested,
        model="iris",
        probabilities=proba if with_probabilities else None,
        classes=CLASSES if with_probabilities else None,
    )


def test_default_outputs_do_not_carry_probabilities() -> None:
    assert [o.name for o in _outputs(None)] == ["prediction", "score"]


def test_requested_probabilities_are_fp64_rows_by_classes_with_the_class_names() -> None:
    (proba,) = _outputs([OUTPUT_PROBABILITIES])
    assert (proba.datatype, proba.shape) == ("FP64", (2, 3))
    assert proba.data.tolist() == [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
    assert proba.parameters == {"classes": list(CLASSES)}
    names = [o.name for o in _outputs(["probabilities", "prediction"])]
    assert names == ["probabilities", "prediction"]


def test_probabilities_of_a_model_without_them_is_a_400_naming_the_outputs() -> None:
    with pytest.raises(InvalidInputError, match=r"'probabilities' but model 'iris' has outputs"):
        _outputs([OUTPUT_PROBABILITIES], with_probabilities=False)


def test_json_answer_is_flat_row_major_with_the_classes_parameter() -> None:
    outputs = _outputs(["prediction", OUTPUT_PROBABILITIES])
    body, header_length = encode_infer_response(
        model="iris", version="1", request_id=None, outputs=outputs
    )
    assert header_length is None
    tensor = orjson.loads(body)["outputs"][1]
    assert tensor == {
        "name": "probabilities",
        "datatype": "FP64",
        "shape": [2, 3],
        "data": [0.7, 0.2, 0.1, 0.1, 0.1, 0.8],
        "parameters": {"classes": list(CLASSES)},
    }


def test_binary_answer_keeps_the_classes_beside_the_byte_count() -> None:
    outputs = _outputs([OUTPUT_PROBABILITIES])
    body, header_length = encode_infer_response(
        model="iris", version="1", request_id=None, outputs=outputs, binary_outputs=None
    )
    assert header_length is not None
    tensor = orjson.loads(body[:header_length])["outputs"][0]
    assert tensor["parameters"] == {"classes": list(CLASSES), "binary_data_size": 48}
    values = np.frombuffer(body[header_length:], dtype="<f8").reshape(tensor["shape"])
    assert values.tolist() == [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]


def test_grpc_answer_is_raw_with_the_classes_as_json_text() -> None:
    request = pb.ModelInferRequest(model_name="iris", id="r1")
    response = response_for(request, _outputs([OUTPUT_PROBABILITIES]), model_version="1")
    tensor = response.outputs[0]
    assert (tensor.datatype, list(tensor.shape)) == ("FP64", [2, 3])
    assert json.loads(tensor.parameters["classes"].string_param) == list(CLASSES)
    raw = np.frombuffer(response.raw_output_contents[0], dtype="<f8").reshape(2, 3)
    assert raw.tolist() == [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]


def _infer_concurrently(requests: list[list[tuple[float, float]]]) -> list[BatchPart]:
    svc = _service()

    async def main() -> list[BatchPart]:
        batcher = AdaptiveBatcher("iris", mode="inline", max_batch_size=1024)
        try:
            return await asyncio.gather(
                *(
                    batcher.infer(
                        svc,
                        {
                            "x": np.array([r[0] for r in rows], dtype=np.float64),
                            "y": np.array([r[1] for r in rows], dtype=np.float64),
                        },
                        n_rows=len(rows),
                    )
                    for rows in requests
                )
            )
        finally:
            await batcher.close()

    return asyncio.run(main())


def test_batched_requests_each_get_their_own_rows_of_probabilities() -> None:
    requests = [[(1.0, 0.0)], [(0.0, 2.0), (-1.0, -1.0)], [(3.0, 3.0)]]
    parts = _infer_concurrently(requests)
    assert {p.batch_rows for p in parts} == {4}  # one batch, split back
    for rows, part in zip(requests, parts, strict=True):
        assert part.classes == CLASSES
        assert part.probabilities is not None
        np.testing.assert_allclose(part.probabilities, [_softmax(*r) for r in rows], rtol=1e-12)


finite = st.floats(min_value=-30, max_value=30, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(finite, finite), max_size=5), min_size=1, max_size=6))
def test_any_mix_of_request_sizes_splits_probabilities_by_request(
    requests: list[list[tuple[float, float]]],
) -> None:
    # A batch without one row has no model output at all (no scores either): nothing to
    # split, so at least one request here has a row.
    assume(any(requests))
    for rows, part in zip(requests, _infer_concurrently(requests), strict=True):
        assert part.probabilities is not None
        assert part.probabilities.shape == (len(rows), len(CLASSES))
        expected = [_softmax(*r) for r in rows]
        np.testing.assert_allclose(part.probabilities.reshape(-1, 3), expected or np.empty((0, 3)))
        (tensor,) = outputs_from_part(
            part.predictions,
            part.scores,
            requested=[OUTPUT_PROBABILITIES],
            model="iris",
            probabilities=part.probabilities,
            classes=part.classes,
        )
        assert tensor.shape == (len(rows), 3)
